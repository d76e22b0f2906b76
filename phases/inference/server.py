"""OpenAI-compatible serving of one model: transformers' own server, pinned to our model, behind a guard.

The endpoints, SSE streaming and generation are those of ``transformers serve``
(``transformers.cli.serving``: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``,
``/health``). Our glue is two pieces:

- :class:`PinnedModelManager`: its model manager, loading the one resolved directory (a
  path or a ``models:/`` URI, fp32 or int8) under a served name, and listing only that in
  ``/v1/models`` (the stock one scans the hub cache, which is empty offline).
- :class:`RequestGuard`: an ASGI middleware that checks a POST before it reaches the
  handler: body size (from Content-Length before reading it, else while reading it), JSON
  object, required fields, ``max_tokens`` within the cap (and a default when absent: the
  stock default is 1024, past our context), prompt size in characters and in tokens against
  the context. A bad request gets a 4xx with ``{"error": {...}}``; the server keeps serving.
  It also bounds the generations running or queued (transformers runs them one at a time on
  one thread, from an unbounded queue): past ``max_pending`` a request gets a 503 with
  ``Retry-After``. A streaming client that goes away is counted and logged; transformers'
  handler then cancels its generation at the next token. A non-streaming generation runs to
  its end (at most ``max_tokens_cap`` tokens) whether or not its client is still there.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
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
    max_pending: int = 8  # generations running or queued at once; past it a 503 with Retry-After
    retry_after_s: int = 1


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
    return RequestGuard(app, model, tokenizer, name, limits)


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, retry_after_s: int | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.retry_after_s = status, message, param, retry_after_s


class RequestGuard:
    """ASGI middleware: validate and complete POST bodies of the generation endpoints, bound the
    generations in flight. ``stats`` counts admitted, refused (4xx), busy (503) and disconnected
    requests; ``active`` is the number of generations running or queued now."""

    REQUIRED = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}

    def __init__(self, app, model, tokenizer, name: str, limits: Limits):
        self.app, self.model, self.tokenizer, self.name, self.limits = app, model, tokenizer, name, limits
        self.context: int | None = getattr(model.config, "max_position_embeddings", None)
        self.stats: Counter[str] = Counter()
        self.active = 0  # only touched on the event loop's thread: no lock

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.REQUIRED:
            return await self.app(scope, receive, send)
        try:
            body = await self._read_body(scope, receive)
            if body is None:  # the client went away while sending its body
                return None
            checked = self.check(scope["path"], body)
            if self.active >= self.limits.max_pending:
                raise RequestError(
                    503,
                    f"this server is busy: {self.active} generations are running or queued, its limit (max_pending); "
                    f"retry after {self.limits.retry_after_s} s",
                    retry_after_s=self.limits.retry_after_s,
                )
        except RequestError as e:
            self.stats["busy" if e.status == 503 else "refused"] += 1
            return await _error(send, e)
        self.active += 1
        self.stats["admitted"] += 1
        try:
            await self._forward(scope, receive, send, checked)
        finally:
            self.active -= 1

    async def _read_body(self, scope, receive) -> bytes | None:
        """The body, refused with a 413 from its Content-Length before reading it, or as soon as the
        bytes read pass the cap (a chunked body has no length)."""
        cap = self.limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > cap:
            raise RequestError(
                413, f"the request body is {int(declared)} bytes (Content-Length), over this server's limit of {cap} bytes: shorten the prompt"
            )
        parts, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > cap:
                raise RequestError(
                    413, f"the request body passed this server's limit of {cap} bytes (read {size} before stopping): shorten the prompt"
                )
            more = message.get("more_body", False)
        return b"".join(parts)

    async def _forward(self, scope, receive, send, checked: dict[str, Any]) -> None:
        """Hand the checked body to transformers' app; count a response its client did not wait for."""
        payload = json.dumps(checked).encode()
        seen = {"replayed": False, "gone": False, "done": False, "bytes": 0}

        async def replay():
            if seen["replayed"]:
                message = await receive()
                # A disconnect before the last body part went out: the client left early (after it, uvicorn answers
                # every receive so). "done" alone can't tell: starlette's request-id middleware ends a cut stream too.
                seen["gone"] |= message["type"] == "http.disconnect" and not seen["done"]
                return message
            seen["replayed"] = True
            return {"type": "http.request", "body": payload, "more_body": False}

        async def watch(message):
            if message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
                seen["done"] |= not message.get("more_body", False)
            await send(message)

        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [(b"content-length", str(len(payload)).encode())]
        await self.app({**scope, "headers": headers}, replay, watch)
        if seen["gone"]:
            self.stats["disconnected"] += 1
            log.info(
                "the client of %s went away after %d bytes of the response; its generation stops at the next token", scope["path"], seen["bytes"]
            )

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
        if "generation_config" in body:  # transformers would build the whole GenerationConfig from it (num_beams, min_new_tokens, ...)
            raise RequestError(
                400, "'generation_config' is not accepted by this server; use max_tokens, temperature, top_p and stop", "generation_config"
            )
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
    kind = "server_busy" if e.status == 503 else "invalid_request_error"
    body = json.dumps({"error": {"message": e.message, "type": kind, "param": e.param, "code": e.status}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if e.retry_after_s is not None:
        headers.append((b"retry-after", str(e.retry_after_s).encode()))
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(resolved: ResolvedModel, host: str = "127.0.0.1", port: int = 8000, name: str = "llm-lifecycle", limits: Limits = Limits()) -> None:
    """Run the server in this process until interrupted (uvicorn)."""
    import uvicorn

    app = build_app(resolved, name, limits)
    log.info("serving %s as %r on http://%s:%d/v1", resolved.label, name, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
