"""Pretraining on one CUDA GPU: the gpu-124m preset (bf16, SDPA, NCCL) and its MFU.

Device command (one line; run from the repository root on the GPU machine):

    bash infra/gpu/device-check.sh

The GPU machine is offline and its image has torch with CUDA but no deepspeed, hjson or
pydantic, and an older transformers. Before the call, run ``infra/gpu/fetch-wheels.sh``
here: it puts those wheels in ``.whl/`` (git-ignored), and the device call must carry it
(device tool: ``carry=[".whl"]``; about 19 MiB). The script installs them to /tmp/site,
runs this file (``pytest -m 'benchmark and gpu' ... -s``) under a 7-minute timeout, and
copies the dated result (``tests/benchmarks/results/pretrain-gpu-<date>.md``) and the
log into ``$OUT``. Skipped where torch sees no GPU.

No data phase: the rows are uniform random tokens packed like the model phase's output
(``train.bin``/``val.bin``/``packed.json``, a small tokenizer), so only the throughput
means anything, not the loss. Three runs, each through the pipeline's own code:

1. eager: ``runtime.build_engine`` (the engine every rank builds, from the derived
   DeepSpeed config) + ``loop.train`` in this process; the loop logs ``train/mfu`` per step.
   MFU = tokens/s x (6 N + 12 L d T) / 989e12 (phases/pretrain/flops.py), median over the
   steps after the warm-up ones.
2. launcher: ``launch.build``: the DeepSpeed launcher, ``phases.pretrain.entry`` on one
   rank (NCCL), checkpoint, HF export: what ``lifecycle run --config gpu-124m`` runs.
3. compiled: as 1 with ``engine.compile()`` (``pretrain.compile: true``); last, because
   compiling takes a minute and is the likeliest to fail; a failure is reported, not raised.

Each test rewrites the result file with what has been measured so far. Asserts that the
figures exist and are finite and that the runtime is CUDA + NCCL + bf16 + SDPA; the MFU
goal (>= 45%) is reported, not asserted.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from phases.model import artifact

pytestmark = [pytest.mark.benchmark, pytest.mark.gpu]

PRESET = "gpu-124m"
WARMUP, TIMED = 5, 20  # optimizer steps: untimed, then timed (each 131,072 tokens)
LAUNCHER_STEPS = 10
MFU_GOAL = 0.45
RESULTS = Path(__file__).parent / "results"
REPORT: dict = {"runs": {}}


@pytest.fixture(scope="module", autouse=True)
def _needs_cuda():  # module scope: before the model dir is built
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")


# --------------------------------------------------------------------------- synthetic model-phase output


class _Vocab:
    """The sizes and special ids prepare.llama_config reads from a tokenizer."""

    def __init__(self, size: int, tokenizer) -> None:
        self.size, self.tokenizer = size, tokenizer
        self.bos_token_id, self.eos_token_id, self.pad_token_id = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)

    def __len__(self) -> int:
        return self.size

    def save_pretrained(self, path) -> None:
        self.tokenizer.save_pretrained(path)


def make_model_dir(root: Path, model_cfg, train_rows: int = 2048, val_rows: int = 256, seed: int = 0) -> Path:
    """What the model phase writes, with random rows: the architecture comes from the
    model phase's own functions (resolve_shape, llama_config) for ``model_cfg``."""
    from phases.model.build import llama_config, resolve_shape
    from tests.phases.pretrain.conftest import made_up_documents, train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(made_up_documents(50, seed))  # only copied into the output
    vocab = model_cfg.vocab_size
    shape, _ = resolve_shape(model_cfg, vocab, tokens_available=train_rows * model_cfg.seq_len)
    arch = llama_config(shape, model_cfg, _Vocab(vocab, tokenizer))
    rng = np.random.default_rng(seed)
    train, val = (rng.integers(0, vocab, size=(rows, model_cfg.seq_len), dtype=np.int64) for rows in (train_rows, val_rows))
    artifact.write(root, _Vocab(vocab, tokenizer), arch, train, val)
    return root


@pytest.fixture(scope="module")
def preset():
    from phases.config import load_config

    return load_config(PRESET)


@pytest.fixture(scope="module")
def model_dir(preset, tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("gpu_model"), preset.model)


# --------------------------------------------------------------------------- measuring


def join_process_group() -> None:
    """One rank in this process, as the launcher would set it up; then the runtime's backend."""
    from phases.pretrain import runtime
    from phases.pretrain.build import free_port

    for k, v in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }.items():
        os.environ.setdefault(k, v)
    REPORT.setdefault("backend_requested", runtime.init_distributed())


def train_in_process(cfg, model_dir: Path, warmup: int, timed: int) -> dict:
    """``warmup + timed`` optimizer steps of ``loop.train`` on ``runtime.build_engine``'s engine;
    the per-step figures are the loop's own metrics (it syncs the device every step)."""
    import deepspeed.comm as dist
    import torch

    from phases.metrics import ListSink
    from phases.pretrain import entry, loop, runtime
    from phases.pretrain.flops import flops_per_token

    cfg = cfg.model_copy(update={"max_steps": warmup + timed, "eval_every": warmup + timed})
    meta, arch = artifact.read_packed(model_dir), artifact.read_architecture(model_dir)
    entry._skip_shm_comm_build()
    join_process_group()
    entry._seed_everything(cfg.seed)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    engine = runtime.build_engine(cfg, arch, dist.get_world_size())
    facts = runtime.describe(engine)
    train = loop.PackedSequences(model_dir / "train.bin", meta, 0, 1, cfg.seed)
    val = loop.PackedSequences(model_dir / "val.bin", meta, 0, 1, cfg.seed)
    flash = flash_kernel_accepts(engine, next(train.train_batches(1))) if cuda and not cfg.compile else None
    if cfg.compile:
        engine.compile()
    sink = ListSink()
    t0 = time.perf_counter()
    summary = loop.train(
        engine,
        train,
        val,
        cfg,
        sink,
        meta["pad_id"],
        {meta["eos_id"], meta["bos_id"]},
        dist,
        log=print,
        flops_per_token=flops_per_token(arch, train.seq_len),
    )
    wall = time.perf_counter() - t0
    tps, mfus = sink.series("train/tokens_per_s"), sink.series("train/mfu")
    step_tokens = engine.train_batch_size() * train.seq_len
    result = {
        **facts,
        "bf16_enabled": engine.bfloat16_enabled(),
        "flash_kernel": flash,
        "parameters": sum(p.numel() for p in engine.module.parameters()),
        "flops_per_token": flops_per_token(arch, train.seq_len),
        "tokens_per_step": step_tokens,
        "warmup": warmup,
        "timed": timed,
        "first_step_s": step_tokens / tps[0],
        "step_s": step_tokens / statistics.median(tps[warmup:]),
        "tokens_per_s": statistics.median(tps[warmup:]),
        "mfu": statistics.median(mfus[warmup:]) if len(mfus) == len(tps) else None,
        "mfu_range": (min(mfus[warmup:]), max(mfus[warmup:])) if len(mfus) == len(tps) else None,
        "mfu_logged_steps": len(mfus),
        "final_loss": summary["final_loss"],
        "val_loss": summary["val_loss"],
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "wall_s": wall,
    }
    del engine, train, val
    gc.collect()
    if cuda:
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    return result


def flash_kernel_accepts(engine, batch) -> str:
    """Whether torch's flash-attention kernel takes this model's attention call (a causal
    mask passed as is_causal, bf16, head dim 64): SDPA restricted to that kernel raises if not."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            engine.module(input_ids=batch[:1].to(engine.device))
        return "yes"
    except Exception as e:  # SDPA raises RuntimeError when no allowed kernel fits the call
        return f"no: {type(e).__name__}: " + (str(e).splitlines() or [""])[0][:160]


def matmul_ceiling(n: int = 8192, reps: int = 10) -> float:
    """bf16 FLOP/s of one large matrix product on this GPU (random data, CUDA events, median)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n**3 / statistics.median(times)


def environment() -> dict:
    """GPU, driver and library versions; a field that cannot be read says why instead of failing the run."""
    import deepspeed
    import torch
    import transformers

    def read(f):
        try:
            return f()
        except Exception as e:  # a missing tool or an API that changed must not cost the measurement
            return f"? ({type(e).__name__})"

    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": torch.cuda.get_device_name(),
        "sms": props.multi_processor_count,
        "memory_gib": props.total_memory / 2**30,
        "nvidia_smi": read(
            lambda: (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=30,
                ).stdout.strip()
                or "-"
            )
        ),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": read(torch.backends.cudnn.version),
        "nccl": read(lambda: ".".join(map(str, torch.cuda.nccl.version()))),
        "deepspeed": deepspeed.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- the report


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def write_report(preset) -> Path:
    r, env, runs = REPORT, REPORT.get("env", {}), REPORT["runs"]
    m, p = preset.model, preset.pretrain
    eager = runs.get("eager", {})
    ceiling = r.get("matmul_flops")
    peak = p.peak_flops
    rows = []
    for name, how in (
        ("eager", "in-process: runtime.build_engine + loop.train"),
        ("compiled", "in-process, engine.compile() (pretrain.compile=true)"),
        ("launcher", f"launch.build: deepspeed launcher + entry, {LAUNCHER_STEPS} steps"),
    ):
        x = runs.get(name)
        if x is None:
            continue
        if "error" in x:
            rows.append(f"| {name} | {how} | failed: {x['error']} | | | | | |")
            continue
        mfu_vs_ceiling = x["mfu"] * peak / ceiling if x.get("mfu") and ceiling else None
        mem = f"{x['peak_memory_gib']:.1f}" if x.get("peak_memory_gib") is not None else "-"
        rows.append(
            f"| {name} | {how} | {x['timed']} after {x['warmup']} | {x['step_s'] * 1e3:.0f} ms "
            f"(first {x['first_step_s']:.1f} s) | {x['tokens_per_s']:,.0f} | {_pct(x.get('mfu'))} | "
            f"{_pct(mfu_vs_ceiling)} | {mem} |"
        )
    measured = [(x["mfu"], name) for name, x in runs.items() if x.get("mfu") is not None]
    best, best_run = max(measured) if measured else (None, None)
    verdict = "not measured" if best is None else f"{'met' if best >= MFU_GOAL else 'not met'}: best {_pct(best)} ({best_run} run)"
    flops_tok = eager.get("flops_per_token")
    text = f"""# Pretraining on one GPU: {PRESET} (bf16, SDPA, NCCL) ({datetime.date.today().isoformat()})

Command (on the GPU machine, with `.whl/` from `infra/gpu/fetch-wheels.sh` carried):
`bash infra/gpu/device-check.sh` (runs `pytest -m 'benchmark and gpu' tests/benchmarks/test_pretrain_gpu.py -s`).

- GPU: {env.get("gpu", "-")}, {env.get("sms", "-")} SMs, {env.get("memory_gib", 0):.1f} GiB; nvidia-smi (driver, max SM clock, power limit): {env.get("nvidia_smi", "-")}
- Versions: torch {env.get("torch", "-")} (CUDA {env.get("cuda", "-")}, cuDNN {env.get("cudnn", "-")}, NCCL {env.get("nccl", "-")}), deepspeed {env.get("deepspeed", "-")}, transformers {env.get("transformers", "-")}, Python {env.get("python", "-")}
- Model: Llama {m.num_layers} layers x {m.hidden_size} wide, {m.num_heads} heads, MLP {m.intermediate_size}, vocab {m.vocab_size}, tied embeddings, seq {m.seq_len}: {eager.get("parameters", 0):,} parameters; {flops_tok or 0:.4g} FLOPs per token (6 N + 12 L d T, phases/pretrain/flops.py)
- Batch: micro {p.micro_batch_size} x accumulation {p.grad_accum} x {m.seq_len} = {p.micro_batch_size * p.grad_accum * m.seq_len:,} tokens per optimizer step; ZeRO {p.zero_stage}, torch AdamW, lr {p.lr} with {p.warmup_steps} warmup steps
- Data: uniform random tokens in the model phase's packed layout (no data phase); the loss means nothing here
- Runtime as the engine reports it (eager run; backend requested by phases/pretrain/runtime.py: {r.get("backend_requested", "-")}): device {eager.get("device", "-")}, backend {eager.get("dist_backend", "-")}, parameters {eager.get("param_dtype", "-")} (DeepSpeed bf16 enabled: {eager.get("bf16_enabled", "-")}), RoPE buffers {eager.get("rope_dtype", "-")}, attention {eager.get("attn_implementation", "-")}; flash kernel takes the model's attention call: {eager.get("flash_kernel", "-")}
- Peak for MFU: {peak / 1e12:.0f} TFLOP/s (H100 SXM dense bf16, data sheet). Measured ceiling: one 8192^3 bf16 matmul at {"-" if not ceiling else f"{ceiling / 1e12:.0f} TFLOP/s"} ({_pct(ceiling / peak if ceiling else None)} of the peak)

| run | path | timed steps | step time (median) | tokens/s (median) | MFU (median) | MFU vs measured matmul | peak GPU memory GiB |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Goal MFU >= {_pct(MFU_GOAL)}: **{verdict}**.
"""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"pretrain-gpu-{datetime.date.today().isoformat()}.md"
    path.write_text(text)
    return path


def _error(e: Exception) -> str:
    first = (str(e).splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:200]}".replace("|", "/")


def _check_gpu_runtime(x: dict) -> None:
    assert x["device"] != "cpu"
    assert x["dist_backend"] == "nccl"
    assert x["param_dtype"] == "bfloat16"
    assert x["attn_implementation"] == "sdpa"
    assert x["rope_dtype"] == "float32"  # DeepSpeed casts parameters only; RoPE frequencies stay exact


# --------------------------------------------------------------------------- the runs


def test_eager_bf16_sdpa_nccl_mfu(preset, model_dir):
    REPORT["env"] = environment()
    REPORT["matmul_flops"] = matmul_ceiling()
    try:
        x = REPORT["runs"]["eager"] = train_in_process(preset.pretrain, model_dir, WARMUP, TIMED)
    except Exception as e:
        REPORT["runs"]["eager"] = {"error": _error(e)}
        write_report(preset)
        raise
    path = write_report(preset)
    print(f"\n{json.dumps(x, indent=1, default=str)}\nwrote {path}")
    _check_gpu_runtime(x)
    assert x["bf16_enabled"] is True
    assert x["mfu_logged_steps"] == WARMUP + TIMED  # the loop logs MFU: the preset's peak is known
    for key in ("tokens_per_s", "mfu", "step_s"):
        assert math.isfinite(x[key]) and x[key] > 0, key
    assert 110e6 <= x["parameters"] <= 140e6
    assert math.isfinite(x["final_loss"])


def test_launcher_path(preset, model_dir, tmp_path, monkeypatch):
    from phases.metrics import ListSink
    from phases.pretrain.build import build
    from phases.refs import PhaseRef

    cfg = preset.pretrain.model_copy(
        update={"max_steps": LAUNCHER_STEPS, "warmup_steps": 2, "eval_every": LAUNCHER_STEPS, "checkpoint_every": LAUNCHER_STEPS, "timeout_s": 300}
    )
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    ref = PhaseRef(phase="model", key="gpu-synthetic", uri=str(model_dir), fingerprint="gpu-synthetic")
    sink = ListSink()
    t0 = time.perf_counter()
    try:
        summary = build(cfg, {"model": ref}, tmp_path / "out", sink)
    except Exception as e:
        REPORT["runs"]["launcher"] = {"error": _error(e)}
        write_report(preset)
        raise
    tps, mfus = sink.series("train/tokens_per_s"), sink.series("train/mfu")
    step_tokens = summary["global_batch_size"] * preset.model.seq_len
    warm = 2
    x = REPORT["runs"]["launcher"] = {
        **{k: summary.get(k) for k in ("device", "dist_backend", "param_dtype", "rope_dtype", "attn_implementation")},
        "warmup": warm,
        "timed": len(tps) - warm,
        "first_step_s": step_tokens / tps[0],
        "step_s": step_tokens / statistics.median(tps[warm:]),
        "tokens_per_s": statistics.median(tps[warm:]),
        "mfu": statistics.median(mfus[warm:]) if mfus else None,
        "summary_mfu": summary.get("mfu"),
        "peak_memory_gib": None,
        "wall_s": time.perf_counter() - t0,
    }
    path = write_report(preset)
    print(f"\n{json.dumps(x, indent=1, default=str)}\nwrote {path}")
    _check_gpu_runtime(summary)
    assert len(mfus) == LAUNCHER_STEPS  # replayed from the rank's metrics.jsonl
    assert math.isfinite(summary["mfu"]) and summary["mfu"] > 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_compiled_mfu(preset, model_dir):
    if os.environ.get("GPU_CHECK_COMPILE", "1") == "0":
        pytest.skip("GPU_CHECK_COMPILE=0")
    cfg = preset.pretrain.model_copy(update={"compile": True})
    try:
        x = train_in_process(cfg, model_dir, WARMUP, TIMED)
    except Exception as e:  # reported, not raised: compile support is not what this check is about
        REPORT["runs"]["compiled"] = {"error": _error(e)}
        print(f"\ncompiled run failed: {REPORT['runs']['compiled']['error']}\nwrote {write_report(preset)}")
        return
    REPORT["runs"]["compiled"] = x
    print(f"\n{json.dumps(x, indent=1, default=str)}\nwrote {write_report(preset)}")
    _check_gpu_runtime(x)
    assert math.isfinite(x["mfu"]) and x["mfu"] > 0
