"""What the DeepSpeed launcher starts on every rank: parse, build, train, close.

``python -m phases.pretrain.entry --args <out>/training_args.json`` (the launcher appends
``--local_rank``). Nothing runs at import; the heavy imports happen inside :func:`main`.
The run's inputs are all in ``training_args.json``, written by :func:`launch.build`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="One rank of the pretraining phase.")
    p.add_argument("--args", type=Path, required=True, help="training_args.json written by phases.pretrain.build")
    p.add_argument("--local_rank", type=int, default=0, help="set by the DeepSpeed launcher (LOCAL_RANK is used)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    spec = json.loads(parse_args(argv).args.read_text())
    import deepspeed.comm as dist

    from phases.config import PretrainConfig
    from phases.metrics import NullSink, sink_from_env
    from phases.model import artifact
    from phases.pretrain import checkpoint, loop, runtime
    from phases.pretrain.flops import flops_per_token

    cfg = PretrainConfig.model_validate(spec["pretrain"])
    model_dir, out = Path(spec["model_dir"]), Path(spec["out"])
    _share_cpu_cores()
    _skip_shm_comm_build()
    runtime.init_distributed()  # nccl on CUDA, gloo on CPU
    rank, world = dist.get_rank(), dist.get_world_size()

    _seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
    meta, arch = artifact.read_packed(model_dir), artifact.read_architecture(model_dir)
    engine = runtime.build_engine(cfg, arch, world)  # the weights are drawn here
    facts = runtime.describe(engine)  # device, backend, dtypes, attention kernel: into the summary
    if rank == 0:
        _print0("runtime: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    plan = spec["checkpoint"]
    state = checkpoint.restore(engine, plan, rank)  # before the first step: weights, optimizer, RNG, position
    if state.resumed_from and rank == 0:
        _print0(f"resuming ({state.resumed_from}) at step {state.step}, data position {state.data_position}")
    if cfg.compile:
        engine.compile()  # after initialize and loading: DeepSpeed compiles the module it wraps, hooks included
    train_data = loop.PackedSequences(model_dir / "train.bin", meta, rank, world, cfg.seed)
    val_data = loop.PackedSequences(model_dir / "val.bin", meta, rank, world, cfg.seed)
    sink = sink_from_env(out / "metrics.jsonl") if rank == 0 else NullSink()
    keep_ids = {meta.get("eos_id"), meta.get("bos_id")}  # if pad shares an id with these, keep it as a target
    summary = loop.train(
        engine,
        train_data,
        val_data,
        cfg,
        sink,
        meta.get("pad_id"),
        keep_ids,
        dist,
        log=_print0,
        state=state,
        on_step=checkpoint.Saver(engine, cfg, plan, dist),
        flops_per_token=flops_per_token(arch, train_data.seq_len),
    )
    summary.update(facts)
    loop.save(engine, out, model_dir / "tokenizer", summary, dist)
    dist.destroy_process_group()


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _share_cpu_cores() -> None:
    """CPU ranks on one node share its cores, and torch gives every process all of them:
    N ranks x all cores threads thrash. Split them, unless OMP_NUM_THREADS says otherwise
    (the launcher's --bind_cores_to_rank sets it)."""
    import torch

    if torch.cuda.is_available() or os.environ.get("OMP_NUM_THREADS"):
        return
    local_ranks = int(os.environ.get("LOCAL_SIZE", "1"))  # set by deepspeed.launcher.launch
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_ranks))


def _skip_shm_comm_build() -> None:
    """Don't JIT-compile DeepSpeed's shared-memory comm op on CPU (about 75 s on first use).

    ``TorchBackend.__init__`` (deepspeed/comm/torch.py) builds it whenever
    ``deepspeed.ops.__compatible_ops__`` marks ``deepspeed_shm_comm`` buildable, and uses
    it in one place only: ``inference_all_reduce``, the tensor-parallel inference path,
    which falls back to ``torch.distributed.all_reduce`` when the op is absent. Training
    collectives (ZeRO's all-reduce, reduce-scatter, all-gather) always go through gloo,
    so this changes nothing for single- or multi-rank training. ``__compatible_ops__`` is a
    module-level dict that DeepSpeed caches so that edits persist (deepspeed/ops/__init__.py).
    """
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return  # GPU accelerators build no shm op
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _print0(line: str) -> None:
    print(line, flush=True)  # rank 0 only (loop.train calls it there); the launcher streams stdout


if __name__ == "__main__":
    main()
