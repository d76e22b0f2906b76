"""Serving on loopback: the OpenAI client against our server (fp32 and int8), bad requests, models:/ URIs,
and the registered model under ``mlflow models serve``."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from phases.errors import ConfigError, DataError
from phases.inference.resolve import resolve
from phases.inference.server import build_app


def client(base):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)


CHAT = [{"role": "user", "content": "What does posixpath.join do?"}]


def test_chat_completion_and_streaming_with_the_openai_client(server):
    c = client(server)
    r = c.chat.completions.create(model="toy", messages=CHAT, max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 0
    again = c.chat.completions.create(model="toy", messages=CHAT, max_tokens=6, temperature=0)
    assert again.choices[0].message.content == r.choices[0].message.content  # temperature 0 is greedy
    chunks = list(c.chat.completions.create(model="toy", messages=CHAT, max_tokens=6, temperature=0, stream=True))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len(chunks) >= 3 and streamed == r.choices[0].message.content
    assert [m.id for m in c.models.list().data] == ["toy"]


def test_completions_health_and_default_max_tokens(server):
    r = client(server).completions.create(model="toy", prompt="def read_config(path):", max_tokens=5)
    assert r.choices[0].text and r.usage.completion_tokens <= 5
    plain = httpx.post(f"{server}/v1/completions", json={"prompt": "def f("}, timeout=60).json()
    assert plain["usage"]["completion_tokens"] <= 8  # the server's default, not transformers' 1024
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"model": "toy"}', 400, "missing required field 'messages'"),
        (b'{"messages": []}', 400, "non-empty list"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 33}', 400, "above this server's cap of 32"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}', 400, "top_p=1.5"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "model": "other"}', 404, "serves 'toy'"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "generation_config": "{\\"num_beams\\": 64}"}', 400, "'generation_config' is not"),
        (json.dumps({"messages": [{"role": "user", "content": "x" * 3000}]}).encode(), 413, "3000 characters"),
        (json.dumps({"messages": [{"role": "user", "content": "word " * 380}]}).encode(), 400, "exceeds the context"),
    ],
)
def test_bad_requests_get_a_json_4xx_and_the_server_keeps_serving(server, body, status, words):
    r = httpx.post(f"{server}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status and words in r.json()["error"]["message"]
    ok = httpx.post(f"{server}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200


def test_the_int8_model_serves(tmp_path, toy_align, serving):
    from phases.inference.quantize import save_int8

    int8 = save_int8(toy_align, tmp_path / "int8")
    with serving(build_app(resolve(str(int8)), name="toy-int8")) as base:
        r = client(base).chat.completions.create(model="toy-int8", messages=CHAT, max_tokens=4)
        assert r.usage.completion_tokens <= 4


# ------------------------------------------------------------------ models:/ URIs


@pytest.fixture(scope="module")
def registry(tmp_path_factory, toy_align):
    """A SQLite registry with the toy align output registered as tasks/model_registry does (alias challenger)."""
    from mlflow.tracking import MlflowClient

    from tasks.model_registry import register_aligned_model

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("inference-test", artifact_location=str(root / "artifacts"))
    run = c.create_run(exp)
    version = register_aligned_model(uri, run.info.run_id, toy_align, "toy-llm")
    c.set_terminated(run.info.run_id)
    return uri, version


def test_models_uri_resolves_by_alias_and_version(registry, monkeypatch):
    uri, version = registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    by_alias, by_version = resolve("models:/toy-llm@challenger"), resolve(f"models:/toy-llm/{version}")
    assert by_alias.model_dir == by_version.model_dir
    assert (by_alias.model_dir / "config.json").is_file() and (by_alias.tokenizer_dir / "tokenizer.json").is_file()
    from phases.inference.generate import load_model

    model, tokenizer = load_model(by_alias.model_dir, by_alias.tokenizer_dir)
    assert model.config.vocab_size == len(tokenizer)


def test_bad_model_uris_say_what_is_wrong(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry[0])
    with pytest.raises(DataError, match="no registered model named 'nope'"):
        resolve("models:/nope@champion")
    with pytest.raises(DataError, match="alias 'champion' is not set"):
        resolve("models:/toy-llm@champion")
    with pytest.raises(DataError, match="version 99 does not exist"):
        resolve("models:/toy-llm/99")
    with pytest.raises(ConfigError, match="malformed"):
        resolve("models:/toy-llm")
    with pytest.raises(DataError, match="no such directory"):
        resolve(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no model under"):
        resolve(str(tmp_path / "empty"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_mlflow_models_serve_answers_invocations(registry, tmp_path):
    """The registered model under MLflow's own scoring server (slow: a subprocess loads mlflow and the model)."""
    from mlflow.tracking import MlflowClient

    uri, version = registry
    MlflowClient(tracking_uri=uri).set_registered_model_alias("toy-llm", "champion", version)
    port = _free_port()
    bin_dir = Path(sys.executable).parent  # mlflow starts `uvicorn` by name: the venv's bin must be on PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    mlflow_bin = bin_dir / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            "models:/toy-llm@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        r = httpx.post(
            f"http://127.0.0.1:{port}/invocations", json={"inputs": ["def read_config(path):"], "params": {"max_new_tokens": 5}}, timeout=120
        )
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["predictions"], list) and r.json()["predictions"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(30)
