"""OpenAI-compatible serving of one model: transformers' own server, pinned to our model, behind a guard.

The endpoints, SSE streaming and generation are those of ``transformers serve``
(``transformers.cli.serving``: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``,
``/health``). Our glue is two pieces:

- :class:`PinnedModelManager`: its model manager, loading the one resolved directory (a
  path or a ``models:/`` URI, fp32 or int8) under a served name, and listing only that in
  ``/v1/models`` (the stock one scans the hub cache, which is empty offline).
- :class:`RequestGuard`: an ASGI middleware that checks a POST before it reaches the
  handler: JSON object, required fields, ``max_tokens`` within the cap (and a default when
  absent: the stock default is 1024, past our context), prompt size in characters and in
  tokens against the context. A bad request gets a 4xx with ``{"error": {...}}``; the
  server keeps serving.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from phases.inference.resolve import ResolvedModel

log = logging.getLogger("lifecycle.inference")


@dataclass(frozen=True)
class Limits:
    max_tokens_cap: int = 256  # most tokens one request may ask for
    default_max_tokens: int = 64  # when a request names none
    max_prompt_chars: int = 20_000  # before tokenizing: a huge body is refused cheaply
    max_body_bytes: int = 1_000_000


def _manager_class():
    from transformers.cli.serving.model_manager import ModelManager

    class PinnedModelManager(ModelManager):
        """transformers' ModelManager for exactly one local model, served as ``name``."""

        def __init__(self, resolved: ResolvedModel, name: str):
            self.resolved, self.served_name = resolved, name
            super().__init__(device="cpu", dtype="float32", force_model=name)

        def _load_processor(self, model_id_and_revision: str, gguf_file: str | None = None):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.resolved.tokenizer_dir)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            return tokenizer

        def _load_model(self, model_id_and_revision: str, tqdm_class=None, progress_callback=None, gguf_file=None):
            from phases.inference.generate import load_model

            model, _ = load_model(self.resolved.model_dir, self.resolved.tokenizer_dir)
            return model

        def get_gen_models(self, cache_dir: str | None = None) -> list[dict]:  # type: ignore[override]
            return [{"id": self.served_name, "object": "model", "created": 0, "owned_by": "llm-lifecycle"}]

    return PinnedModelManager


def build_app(resolved: ResolvedModel, name: str = "llm-lifecycle", limits: Limits = Limits()):
    """The FastAPI app of ``transformers serve`` for one model, wrapped in :class:`RequestGuard`."""
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.cli.serving.utils import GenerationState

    manager = _manager_class()(resolved, name)
    state = GenerationState(continuous_batching=False, compile=False)
    app = build_server(
        manager,
        ChatCompletionHandler(model_manager=manager, generation_state=state, chat_template_kwargs={}),
        completion_handler=CompletionHandler(model_manager=manager, generation_state=state),
        response_handler=ResponseHandler(model_manager=manager, generation_state=state, chat_template_kwargs={}),
        transcription_handler=TranscriptionHandler(manager, state),
        systemone_handler=SystemOneHandler(model_manager=manager, generation_state=state, chat_template_kwargs={}),
        generation_state=state,
    )
    model, tokenizer = manager.load_model_and_processor(manager.process_model_name(name))
    context = getattr(model.config, "max_position_embeddings", None)
    return RequestGuard(app, tokenizer, context, name, limits)


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class RequestGuard:
    """ASGI middleware: validate and complete POST bodies of the generation endpoints."""

    REQUIRED = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}

    def __init__(self, app, tokenizer, context: int | None, name: str, limits: Limits):
        self.app, self.tokenizer, self.context, self.name, self.limits = app, tokenizer, context, name, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.REQUIRED:
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limits.max_body_bytes:
                return await _error(send, RequestError(413, f"request body over {self.limits.max_body_bytes} bytes"))
        try:
            checked = self.check(scope["path"], body)
        except RequestError as e:
            return await _error(send, e)
        payload = json.dumps(checked).encode()
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}

        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [(b"content-length", str(len(payload)).encode())]
        return await self.app({**scope, "headers": headers}, replay, send)

    def check(self, path: str, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(400, f"the request body is not JSON ({e})") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        field = self.REQUIRED[path]
        if field not in body:
            raise RequestError(400, f"missing required field '{field}'", field)
        if body.get("model") not in (None, self.name):
            raise RequestError(404, f"model '{body.get('model')}' is not served here; this server serves '{self.name}'", "model")
        body["model"] = self.name
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        asked = body.get(key, self.limits.default_max_tokens)
        if asked is None:
            asked = self.limits.default_max_tokens
        if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
            raise RequestError(400, f"{key} must be a positive integer, got {asked!r}", key)
        if asked > self.limits.max_tokens_cap:
            raise RequestError(400, f"{key}={asked} is above this server's cap of {self.limits.max_tokens_cap}", key)
        body[key] = asked
        for name, lo, hi in (("temperature", 0.0, 5.0), ("top_p", 1e-9, 1.0)):
            v = body.get(name)
            if v is not None and (not isinstance(v, (int, float)) or not lo <= v <= hi):
                raise RequestError(400, f"{name}={v!r} is outside [{lo:g}, {hi:g}]", name)
        prompt_tokens = self._prompt_tokens(field, body[field])
        if self.context is not None and prompt_tokens + asked > self.context:
            raise RequestError(
                400,
                f"the prompt has {prompt_tokens} tokens; with {key}={asked} that exceeds the context of "
                f"{self.context} tokens: shorten the prompt or ask for fewer tokens",
                field,
            )
        return body

    def _prompt_tokens(self, field: str, value: Any) -> int:
        if field == "prompt":
            if not isinstance(value, str) or not value:
                raise RequestError(400, "'prompt' must be a non-empty string", "prompt")
            text = value
        else:
            if not isinstance(value, list) or not value or not all(isinstance(m, dict) and "role" in m for m in value):
                raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
            contents = [m.get("content") for m in value]
            if not all(isinstance(c, str) for c in contents):
                raise RequestError(400, "only text message content (a string) is supported", "messages")
            text = "".join(contents)
        if len(text) > self.limits.max_prompt_chars:
            raise RequestError(413, f"the prompt has {len(text)} characters, over the limit of {self.limits.max_prompt_chars}", field)
        if field == "prompt":
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return len(self.tokenizer.apply_chat_template(value, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


async def _error(send, e: RequestError) -> None:
    body = json.dumps({"error": {"message": e.message, "type": "invalid_request_error", "param": e.param, "code": e.status}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": e.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(resolved: ResolvedModel, host: str = "127.0.0.1", port: int = 8000, name: str = "llm-lifecycle", limits: Limits = Limits()) -> None:
    """Run the server in this process until interrupted (uvicorn)."""
    import uvicorn

    app = build_app(resolved, name, limits)
    log.info("serving %s as %r on http://%s:%d/v1", resolved.label, name, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
