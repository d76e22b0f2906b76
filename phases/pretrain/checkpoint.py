"""Resumable pretraining checkpoints: where they live, whether to resume, save and restore.

Layout of one run's checkpoint directory (see :func:`checkpoint_dir`)::

    <root>/<run id>/latest.json            the newest *complete* checkpoint (written last, atomically)
    <root>/<run id>/g<gen>-step<NNNNNNN>/   DeepSpeed's files (engine.save_checkpoint) plus
        rng_rank<r>.json                    python/numpy/torch RNG states of rank r (JSON: nothing is unpickled)
        lifecycle.json                      the run state as JSON (step, data position, losses, data digest)

The run id hashes what fixes the training trajectory (the pretrain section minus
operational fields, and the architecture), but *not* the training data: a run whose data
changed must find its old checkpoint, to refuse resuming on it (the default) or to
warm-start from it, by ``pretrain.on_new_data``). DeepSpeed's own ``latest`` file is not used:
rank 0 writes it before the other ranks' ZeRO shards are known to be on disk, while
``latest.json`` is written after a barrier that follows every rank's save.
The client state holds the run state; the RNG states go into one file per rank because
only rank 0 writes DeepSpeed's model-states file (where client state lives).

Nothing in a checkpoint directory is unpickled with code execution: DeepSpeed writes its
``*.pt`` files with ``torch.save`` and reads them with ``torch.load(weights_only=False)``
(TorchCheckpointEngine.load in 0.19), so :func:`restore` swaps in :func:`load_weights_only`:
tensors, containers and plain values, plus the four DeepSpeed classes its ZeRO optimizer states
hold (:func:`deepspeed_safe_globals`). A file with anything else is refused, naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phases.config import PretrainConfig, canonical_json
from phases.errors import DataError
from phases.model import artifact

LATEST = "latest.json"
STATE_FILE = "lifecycle.json"
CLIENT_KEY = "lifecycle"
_TAG = re.compile(r"^g(\d+)-step(\d+)$")
# Fields that change how a run is operated, not which weights it produces: changing them
# must not orphan the checkpoints (raising timeout_s on a killed run and resuming is the point).
OPERATIONAL_FIELDS = (
    "timeout_s",
    "checkpoint_every",
    "keep_checkpoints",
    "resume",
    "on_new_data",
    "activation_checkpointing",
    "compile",
    "peak_flops",
    "eval_every",
    "eval_batches",
    "hostfile",
)


@dataclass
class RunState:
    """Everything beyond weights, optimizer and lr schedule needed to continue exactly."""

    step: int = 0  # optimizer steps done in this generation
    data_position: int = 0  # micro-batches each rank has consumed from the training stream
    losses: list[float] = field(default_factory=list)
    val_loss: float = float("nan")
    train_seconds: float = 0.0
    generation: int = 0  # +1 at each warm start on new data
    data_fingerprint: str = ""
    tokenizer_digest: str = ""
    resumed_from: str | None = None  # "resume:<tag>" or "warm:<tag>" for the log and summary


# --------------------------------------------------------------------------- parent side (pure)


def run_id(cfg: PretrainConfig, model_dir: Path) -> str:
    section = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in OPERATIONAL_FIELDS}
    arch = artifact.read_architecture(model_dir)
    return hashlib.sha256(canonical_json({"pretrain": section, "architecture": arch}).encode()).hexdigest()[:20]


def checkpoint_dir(cfg: PretrainConfig, model_dir: Path, out: Path) -> Path:
    """``$LIFECYCLE_HOME/checkpoints/pretrain/<run id>``, stable across attempts.

    ``out`` is a staging directory with a random name, deleted when the phase fails, so it
    cannot hold what a rerun resumes from. Without ``LIFECYCLE_HOME`` (a notebook calling
    ``build`` directly) the checkpoints go beside ``out``: ``<out's parent>/.checkpoints/...``,
    which for a staging dir is the phase's outputs folder, stable as well.
    """
    home = os.environ.get("LIFECYCLE_HOME")
    root = Path(home) / "checkpoints" if home else Path(out).resolve().parent / ".checkpoints"
    return root / "pretrain" / run_id(cfg, model_dir)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def read_latest(ckpt_dir: Path) -> dict[str, Any] | None:
    path = Path(ckpt_dir) / LATEST
    if not path.is_file():
        return None
    latest = json.loads(path.read_text())
    return latest if (Path(ckpt_dir) / latest["tag"] / STATE_FILE).is_file() else None


def plan_resume(cfg: PretrainConfig, ckpt_dir: Path, data_fingerprint: str, tokenizer_digest: str) -> dict[str, Any]:
    """Decide, before any rank starts, what the run begins from: ``fresh``, ``resume`` or ``warm``.

    When the latest checkpoint was trained on other data, ``cfg.on_new_data`` decides: ``retrain``
    deletes those checkpoints and starts fresh, ``warm_start`` continues from their weights (same
    tokenizer only), ``fail`` raises a :class:`DataError` naming the fixes.
    """
    plan = {
        "dir": str(ckpt_dir),
        "mode": "fresh",
        "tag": None,
        "generation": 0,
        "data_fingerprint": data_fingerprint,
        "tokenizer_digest": tokenizer_digest,
    }
    if cfg.resume == "never":
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # else its old tags would mix with the new run's
        return plan
    latest = read_latest(ckpt_dir)
    if latest is None:
        return plan
    plan.update(tag=latest["tag"], generation=latest["generation"])
    if latest["data_fingerprint"] == data_fingerprint:
        return {**plan, "mode": "resume"}
    if cfg.on_new_data == "retrain":
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return {**plan, "mode": "fresh", "tag": None, "generation": 0, "replaced": latest["tag"]}
    if cfg.on_new_data == "fail":
        raise DataError(
            f"cannot resume pretraining from {ckpt_dir / latest['tag']}: it was trained on data "
            f"{latest['data_fingerprint']}, the model phase output is now {data_fingerprint}. Set "
            "pretrain.on_new_data=warm_start to continue from its weights on the new data, or "
            f"pretrain.on_new_data=retrain to train from scratch (this deletes {ckpt_dir})"
        )
    if latest.get("tokenizer_digest") != tokenizer_digest:
        raise DataError(
            f"cannot warm-start from {ckpt_dir / latest['tag']}: the tokenizer changed "
            f"({latest.get('tokenizer_digest')} -> {tokenizer_digest}), so token ids mean other things; keep the "
            "tokenizer (model.tokenizer_path=<the earlier model output>/tokenizer) or set pretrain.on_new_data=retrain"
        )
    return {**plan, "mode": "warm", "generation": latest["generation"] + 1}


# --------------------------------------------------------------------------- rank side


def restore(engine, plan: dict[str, Any], rank: int) -> RunState:
    """Load the planned checkpoint into ``engine`` (every rank calls this); return the run state."""
    fresh = RunState(generation=plan["generation"], data_fingerprint=plan["data_fingerprint"], tokenizer_digest=plan["tokenizer_digest"])
    if plan["mode"] == "fresh":
        return fresh
    ckpt_dir, tag = plan["dir"], plan["tag"]
    warm = plan["mode"] == "warm"
    read_weights_only(engine)
    # A warm start keeps what was learned (weights, Adam moments) and restarts the schedule:
    # a new lr warmup and cosine over max_steps, and the new data from its first row.
    path, client = engine.load_checkpoint(ckpt_dir, tag, load_optimizer_states=True, load_lr_scheduler_states=not warm)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {tag} from {ckpt_dir}")
    if warm:
        engine.global_steps = engine.global_samples = 0
        fresh.resumed_from = f"warm:{tag}"
        return fresh
    state = RunState(**client[CLIENT_KEY])
    state.resumed_from = f"resume:{tag}"
    set_rng_state(read_rng_state(Path(ckpt_dir) / tag, rank))
    return state


def deepspeed_safe_globals() -> list[type]:
    """The classes besides tensors, containers and plain values that DeepSpeed 0.19 pickles into a
    checkpoint (found by loading stage 0-3 fp32/bf16 checkpoints with weights_only=True): the ZeRO
    optimizer state's loss scaler, ZeRO stage enum and parameter fragment addresses. Data-only
    classes: unpickling them sets attributes and runs no code of the file's choosing."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load_weights_only(path, map_location=None):
    """``torch.load(path, weights_only=True)`` with :func:`deepspeed_safe_globals` allowed."""
    import torch

    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise DataError(
            f"checkpoint file {path} holds objects other than tensors and plain values, so it is not loaded "
            f"(weights_only=True: {str(e).splitlines()[0]}); delete it or set pretrain.resume=never to train from scratch"
        ) from None


def read_weights_only(engine) -> None:
    """Make ``engine.load_checkpoint`` read every file through :func:`load_weights_only`: DeepSpeed
    reads model, optimizer and ZeRO shard files through ``engine.checkpoint_engine.load`` only."""
    engine.checkpoint_engine.load = load_weights_only


class Saver:
    """Saves every ``cfg.checkpoint_every`` steps and at the end; keeps the newest few."""

    def __init__(self, engine, cfg: PretrainConfig, plan: dict[str, Any], dist) -> None:
        self.engine, self.cfg, self.dir, self.dist = engine, cfg, Path(plan["dir"]), dist
        self.last_saved: int | None = None

    def __call__(self, state: RunState, final: bool = False) -> None:
        if state.step == self.last_saved or (not final and state.step % self.cfg.checkpoint_every):
            return
        self.save(state)

    def save(self, state: RunState) -> None:
        rank = self.dist.get_rank()
        tag = f"g{state.generation}-step{state.step:07d}"
        (self.dir / tag).mkdir(parents=True, exist_ok=True)
        _write_json(self.dir / tag / f"rng_rank{rank}.json", get_rng_state())
        record = {k: v for k, v in asdict(state).items() if k != "resumed_from"}
        # Collective: every rank writes its ZeRO shard, and the call ends with a barrier.
        self.engine.save_checkpoint(str(self.dir), tag, client_state={CLIENT_KEY: record}, save_latest=False)
        self.dist.barrier()  # every rank's RNG file and shard is on disk before latest.json names the tag
        if rank == 0:
            _write_json(self.dir / tag / STATE_FILE, record)
            _write_json(self.dir / LATEST, {"tag": tag, **{k: record[k] for k in ("step", "generation", "data_fingerprint", "tokenizer_digest")}})
            self._prune(keep=tag)
        self.dist.barrier()
        self.last_saved = state.step

    def _prune(self, keep: str) -> None:
        tags = sorted((tuple(map(int, m.groups())), p) for p in self.dir.iterdir() if (m := _TAG.match(p.name)))
        older = [p for _, p in tags if p.name != keep][: max(0, len(tags) - self.cfg.keep_checkpoints)]
        for p in older:
            shutil.rmtree(p, ignore_errors=True)


def get_rng_state() -> dict[str, Any]:
    """Every RNG's state as plain JSON values (a checkpoint never needs unpickling to resume)."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def read_rng_state(tag_dir: Path, rank: int) -> dict[str, Any]:
    path = Path(tag_dir) / f"rng_rank{rank}.json"
    if not path.is_file():
        raise DataError(
            f"checkpoint {tag_dir} has no {path.name} (an older version kept RNG states in a pickle, "
            "which is no longer loaded); set pretrain.resume=never to train from scratch"
        )
    return json.loads(path.read_text())


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)
