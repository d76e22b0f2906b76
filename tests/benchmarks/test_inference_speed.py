"""Inference speed: tokens/s and latency by batch size, with and without the KV cache; int8 vs fp32;
the server under 8 concurrent loopback clients.

Opt-in: ``.venv/bin/pytest -m benchmark tests/benchmarks/test_inference_speed.py -s``. The model is
the tiny preset's architecture (tied lm_head, as the model phase builds it) with random weights and a
byte-level BPE trained on the toy corpus, or the align output named by ``LIFECYCLE_BENCH_MODEL``.
Perplexity is on the toy corpus' validation text (real Python and prose): on random weights its
absolute value means nothing, the int8/fp32 ratio measures quantization error. Every call is greedy
with a fixed number of new tokens (min_new_tokens = max_new_tokens), so batches do equal work.
Traffic goes to 127.0.0.1 only and is bounded (8 clients x 4 requests). Figures go to stdout and to
``$LIFECYCLE_BENCH_OUT`` (JSON) when set; asserted are only the size and perplexity goals, never time.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "phases"))
import toy_artifacts  # noqa: E402

NEW_TOKENS, REPEATS, BATCHES = 32, 5, (1, 8, 32)
CLIENTS, REQUESTS_PER_CLIENT = 8, 4


def _model_dir(tmp: Path) -> Path:
    if os.environ.get("LIFECYCLE_BENCH_MODEL"):
        return Path(os.environ["LIFECYCLE_BENCH_MODEL"])
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from phases.config import load_config
    from phases.model.build import llama_config

    m = load_config("tiny").model
    texts = [r["text"] for split in toy_artifacts.data_rows().values() for r in split]
    tok = toy_artifacts.train_tokenizer(texts, vocab_size=m.vocab_size)
    tok.model_max_length = m.max_position_embeddings
    # The tiny preset's decoder, as the model phase sizes it.
    config = LlamaConfig(**llama_config((m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size), m, tok))
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp / "fp32")
    tok.save_pretrained(tmp / "fp32")
    return tmp / "fp32"


def _by_batch(model, tokenizer) -> dict:
    from phases.inference.quantize import tokens_per_s
    from phases.inference.sampling import percentile

    out = {}
    for cache in (True, False):
        for b in BATCHES:
            r = tokens_per_s(model, tokenizer, b, NEW_TOKENS, use_cache=cache, repeats=REPEATS)
            lat = r["latencies"]
            out[f"{'cache' if cache else 'no_cache'}/b{b}"] = {
                "tokens_per_s_median": b * NEW_TOKENS / statistics.median(lat),
                "latency_p50_s": percentile(lat, 50),
                "latency_p95_s": percentile(lat, 95),
            }
    for cache in ("cache", "no_cache"):
        out[f"{cache}/b32_over_b1"] = out[f"{cache}/b32"]["tokens_per_s_median"] / out[f"{cache}/b1"]["tokens_per_s_median"]
    return out


def _server_load(model_dir: Path) -> dict:
    import httpx
    import uvicorn

    from phases.inference.resolve import resolve
    from phases.inference.sampling import percentile
    from phases.inference.server import build_app

    srv = uvicorn.Server(uvicorn.Config(build_app(resolve(str(model_dir)), name="bench"), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started and thread.is_alive():
        time.sleep(0.05)
    base = f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    body = {"model": "bench", "messages": [{"role": "user", "content": "What does posixpath.join do?"}], "max_tokens": 16, "temperature": 0}

    def client(_):
        lat = []
        with httpx.Client(timeout=120) as c:
            for _ in range(REQUESTS_PER_CLIENT):
                t = time.perf_counter()
                assert c.post(f"{base}/v1/chat/completions", json=body).status_code == 200
                lat.append(time.perf_counter() - t)
        return lat

    try:
        httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            lat = [x for lats in pool.map(client, range(CLIENTS)) for x in lats]
        wall = time.perf_counter() - started
    finally:
        srv.should_exit = True
        thread.join(10)
    return {
        "clients": CLIENTS,
        "requests": len(lat),
        "requests_per_s": len(lat) / wall,
        "latency_p50_s": percentile(lat, 50),
        "latency_p95_s": percentile(lat, 95),
        "max_tokens": 16,
    }


def test_inference_speed(tmp_path):
    import torch
    import torchao
    import transformers

    from phases.inference.generate import load_model
    from phases.inference.quantize import compare, save_int8

    fp32_dir = _model_dir(tmp_path)
    int8_dir = save_int8(fp32_dir, tmp_path / "int8")
    validation = [r["text"] for r in toy_artifacts.data_rows()["validation"]]
    model, tokenizer = load_model(fp32_dir)
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_before": os.getloadavg(),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "torchao": torchao.__version__},
        "model": {"dir": str(fp32_dir), "parameters": sum(p.numel() for p in model.parameters()), "new_tokens": NEW_TOKENS, "repeats": REPEATS},
        "by_batch_fp32": _by_batch(model, tokenizer),
        "quantization": compare(fp32_dir, int8_dir, validation, batches=(1, 8), new_tokens=NEW_TOKENS),
    }
    result["server"] = _server_load(fp32_dir)
    result["machine"]["load_avg_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("LIFECYCLE_BENCH_OUT"):
        Path(os.environ["LIFECYCLE_BENCH_OUT"]).write_text(text)
    q = result["quantization"]["torchao_int8"]
    assert q["size_ratio"] <= 0.4, q
    assert q["perplexity_rise"] <= 0.05, q
