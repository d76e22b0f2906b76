"""Tokens/s of our DeepSpeed training step against a bare PyTorch loop, same process.

Opt-in: ``.venv/bin/pytest -m benchmark tests/benchmarks/test_pretrain_throughput.py -s``.
Both sides train the tiny preset's architecture on the same random token batches with
AdamW (same betas, eps, weight decay groups, clipping, seed). Ours goes through
``deepspeed.initialize`` and ``loop.optimizer_step`` (what every rank runs); the baseline is
``model(...).loss.backward(); clip_grad_norm_; opt.step(); zero_grad``. Warmup steps are
not timed; the sides alternate over several repetitions so that drift in the machine's
load hits both. Reports the median ratio; asserts only that both ran.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import pytest

pytestmark = pytest.mark.benchmark

WARMUP, STEPS, REPS = 10, 10, 5


def _model(arch, seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**arch))


def _arch():
    from phases.config import load_config

    m = load_config("tiny").model
    return dict(
        vocab_size=m.vocab_size,
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_heads,
        max_position_embeddings=m.max_position_embeddings,
        tie_word_embeddings=True,
    )


def _time(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - t0


def _deepspeed_stepper(cfg, arch, batches):
    import deepspeed

    from phases.pretrain import entry, loop
    from phases.pretrain.dsconfig import deepspeed_config

    for k, v in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(__import__("phases.pretrain.build", fromlist=["x"]).free_port()),
    }.items():
        os.environ.setdefault(k, v)
    entry._skip_shm_comm_build()
    deepspeed.init_distributed()
    model = _model(arch, cfg.seed)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=loop.param_groups(model, cfg.weight_decay), config=deepspeed_config(cfg, 1))
    loop.align_scheduler(engine)
    engine.train()
    stream = iter(batches * 1000)
    return lambda: loop.optimizer_step(engine, stream, 1, None, set())


def _torch_stepper(cfg, arch, batches):
    import torch

    from phases.pretrain import loop
    from phases.pretrain.dsconfig import ADAM_BETAS, ADAM_EPS

    model = _model(arch, cfg.seed)
    opt = torch.optim.AdamW(loop.param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    model.train()
    stream = iter(batches * 1000)

    def step():
        batch = next(stream)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def test_deepspeed_step_vs_bare_pytorch():
    import deepspeed
    import torch
    import transformers

    from phases.config import load_config

    cfg = load_config("tiny").pretrain
    arch, seq = _arch(), load_config("tiny").model.seq_len
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, arch["vocab_size"], (cfg.micro_batch_size, seq), generator=gen) for _ in range(8)]
    tokens_per_step = cfg.micro_batch_size * seq
    ours, bare = _deepspeed_stepper(cfg, arch, batches), _torch_stepper(cfg, arch, batches)
    _time(ours, WARMUP), _time(bare, WARMUP)
    ours_tps, bare_tps = [], []
    for _ in range(REPS):
        ours_tps.append(tokens_per_step * STEPS / _time(ours, STEPS))
        bare_tps.append(tokens_per_step * STEPS / _time(bare, STEPS))
    ratios = [o / b for o, b in zip(ours_tps, bare_tps)]
    print(f"\nmachine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"versions: torch {torch.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")
    print(f"config: tiny preset, micro_batch {cfg.micro_batch_size} x seq {seq}, {WARMUP} warmup + {STEPS} timed steps x {REPS} reps")
    print("deepspeed tokens/s: " + ", ".join(f"{t:.0f}" for t in ours_tps))
    print("bare torch tokens/s: " + ", ".join(f"{t:.0f}" for t in bare_tps))
    print(f"ratio (ours / bare): median {statistics.median(ratios):.3f}, per rep " + ", ".join(f"{r:.3f}" for r in ratios))
    assert len(ratios) == REPS and all(r > 0 for r in ratios)
