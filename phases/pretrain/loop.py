"""The pretraining loop that runs on every rank: data, steps, evaluation, saving.

Called by :mod:`phases.pretrain.entry` after ``deepspeed.initialize``. Only rank 0 logs and
writes files; every rank takes part in each collective (loss averaging, evaluation, the
ZeRO-3 parameter gather), so the ranks never wait on one another forever.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from phases.config import PretrainConfig
from phases.pretrain.checkpoint import RunState
from phases.pretrain.flops import mfu, peak_flops


class PackedSequences:
    """Rows of a packed ``.bin`` file, read through a memory map, sharded by rank.

    The order is one seeded permutation per epoch, shared by all ranks, and rank ``r`` of
    ``w`` takes positions ``r, r + w, r + 2w, ...`` (DistributedSampler's layout). The
    optimizer step ``k`` therefore sees the same global set of rows whatever the split of
    the global batch into ranks x micro-batches x accumulation steps, which is what makes a
    2-rank run comparable to a 1-rank run.
    """

    def __init__(self, path: Path, meta: dict[str, Any], rank: int, world_size: int, seed: int) -> None:
        self.path, self.rank, self.world_size, self.seed = Path(path), rank, world_size, seed
        self.dtype = np.dtype(meta["dtype"])
        self.seq_len = int(meta["seq_len"])
        self.rows = self.path.stat().st_size // (self.dtype.itemsize * self.seq_len)
        if self.rows < world_size:
            raise ValueError(f"{self.path} has {self.rows} sequences, fewer than the {world_size} ranks")

    def _rows(self, index: np.ndarray) -> torch.Tensor:
        # A fresh memmap per batch: a long-lived one keeps every touched page mapped and
        # its resident size grows with the file (nanoGPT's note on the same leak).
        data = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.rows, self.seq_len))
        return torch.from_numpy(data[np.sort(index)].astype(np.int64))

    def train_batches(self, micro_batch_size: int, start: int = 0) -> Iterator[torch.Tensor]:
        """Endless micro-batches for this rank, epoch after epoch, from the ``start``-th one.

        The order depends only on (seed, epoch), so a resumed run jumps straight to its
        position (no batches are read to skip them) and sees exactly the rows it would have."""
        per_rank = self.rows // self.world_size  # drop the tail so every rank has equal work
        per_epoch = per_rank // micro_batch_size
        if per_epoch < 1:
            raise ValueError(f"{self.path}: {per_rank} rows per rank cannot fill a micro-batch of {micro_batch_size}")
        epoch, skip = divmod(start, per_epoch)
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)[: per_rank * self.world_size]
            mine = order[self.rank :: self.world_size]
            for i in range(skip, per_epoch):
                yield self._rows(mine[i * micro_batch_size : (i + 1) * micro_batch_size])
            epoch, skip = epoch + 1, 0

    def rows_seen(self, micro_batch_size: int, grad_accum: int, steps: int) -> np.ndarray:
        """Global row indices the first ``steps`` optimizer steps train on, in order, all ranks together.

        Rank r takes order positions r, r+w, ...; a step takes grad_accum micro-batches per
        rank, so step k covers the contiguous positions [k*G, (k+1)*G) of the epoch order
        (G = micro x accum x world), wrapping into the next epoch's permutation.
        """
        per_epoch = (self.rows // self.world_size // micro_batch_size) * micro_batch_size * self.world_size
        total = steps * micro_batch_size * grad_accum * self.world_size
        out, epoch = [], 0
        while total > 0:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)[:per_epoch]
            out.append(order[:total])
            total -= len(out[-1])
            epoch += 1
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def eval_batches(self, micro_batch_size: int, num_rows: int) -> Iterator[torch.Tensor]:
        """The first ``num_rows`` rows in file order (fewer if the file is shorter), split
        evenly over the ranks: the same rows every time and whatever the rank layout."""
        total = min(self.rows, num_rows)
        total -= total % self.world_size  # equal shares: under ZeRO-3 every forward is a collective
        mine = np.arange(total)[self.rank :: self.world_size]
        for start in range(0, len(mine), micro_batch_size):
            yield self._rows(mine[start : start + micro_batch_size])


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: decaying norm gains and biases pulls them to 0 for no benefit."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def align_scheduler(engine) -> None:
    """Start the lr schedule at position 0 (see ``dsconfig.warmup_cosine_params``).

    DeepSpeed's WarmupCosineLR is built at position -1, where its lr is 0, and the engine
    advances it only after each optimizer step: without this the first step would not train.
    """
    if engine.lr_scheduler is not None and getattr(engine.lr_scheduler, "last_batch_iteration", 0) < 0:
        engine.lr_scheduler.step()


def _labels(batch: torch.Tensor, pad_id: int | None, keep_ids: set[int]) -> torch.Tensor:
    labels = batch.clone()  # the model shifts labels itself
    if pad_id is not None and pad_id not in keep_ids:
        labels[batch == pad_id] = -100  # padding at the end of a packed row is not a target
    return labels


def _mean_across_ranks(value: torch.Tensor, dist) -> float:
    value = value.detach().clone()
    dist.all_reduce(value)
    return value.item() / dist.get_world_size()


def _own_grad_norm(engine) -> float | None:
    """DeepSpeed reports the global norm only where its optimizer wrapper computes one
    (ZeRO, fp16, bf16). For plain fp32 without ZeRO it stays None, but there the full,
    already averaged gradients sit on every rank between backward and step: take it here."""
    if engine.zero_optimization_stage() != 0 or engine.fp16_enabled() or engine.bfloat16_enabled():
        return None
    grads = [p.grad.detach().float().norm() for p in engine.module.parameters() if p.grad is not None]
    return torch.stack(grads).norm().item() if grads else None


def _reported_grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()  # set by the step that just ran, pre-clipping
    if isinstance(norm, torch.Tensor):
        norm = norm.item()
    return None if norm is None else float(norm)


@torch.no_grad()
def evaluate(engine, data: PackedSequences, cfg: PretrainConfig, pad_id, keep_ids, dist) -> float:
    """Mean token loss over ``eval_batches`` global batches of validation rows, all ranks.

    Sized in global batches (not per-rank micro-batches) so that runs with the same global
    batch but a different split over ranks and accumulation score the same rows."""
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=engine.device)
    for batch in data.eval_batches(cfg.micro_batch_size, cfg.eval_batches * engine.train_batch_size()):
        batch = batch.to(engine.device)
        labels = _labels(batch, pad_id, keep_ids)
        targets = (labels[:, 1:] != -100).sum()
        loss = engine(input_ids=batch, labels=labels).loss
        total += torch.stack([loss.double() * targets, targets.double()])
    dist.all_reduce(total)
    engine.train()
    return (total[0] / total[1].clamp(min=1)).item()


def optimizer_step(engine, batches, accum: int, pad_id, keep_ids) -> tuple[torch.Tensor, float | None]:
    """One optimizer step of ``accum`` micro-batches: (this rank's mean loss, grad norm)."""
    step_loss = torch.zeros((), device=engine.device)
    grad_norm = None
    for _ in range(accum):
        batch = next(batches).to(engine.device)
        loss = engine(input_ids=batch, labels=_labels(batch, pad_id, keep_ids)).loss
        engine.backward(loss)  # DeepSpeed divides by the accumulation steps itself
        boundary = engine.is_gradient_accumulation_boundary()
        own_norm = _own_grad_norm(engine) if boundary else None  # before step() zeroes the grads
        engine.step()  # applies the update only at the accumulation boundary
        if boundary:
            grad_norm = _reported_grad_norm(engine) if own_norm is None else own_norm
        step_loss += loss.detach() / accum
    return step_loss, grad_norm


def train(
    engine,
    train_data,
    val_data,
    cfg: PretrainConfig,
    sink,
    pad_id,
    keep_ids,
    dist,
    log=print,
    state: RunState | None = None,
    on_step=None,
    flops_per_token: float | None = None,
) -> dict[str, Any]:
    """Run optimizer steps ``state.step + 1 .. cfg.max_steps``; returns the run's headline summary.

    ``state`` is where a resumed run stands (a fresh one by default); ``on_step(state)`` runs
    after every step and ``on_step(state, final=True)`` at the end (the checkpoint saver).
    ``flops_per_token`` enables the MFU metric where the device's peak is known."""
    rank, world = dist.get_rank(), dist.get_world_size()
    state = state or RunState()
    accum = engine.gradient_accumulation_steps()
    tokens_per_step = engine.train_batch_size() * train_data.seq_len
    batches = train_data.train_batches(cfg.micro_batch_size, start=state.data_position)
    peak = peak_flops(cfg.peak_flops, torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    align_scheduler(engine)
    engine.train()
    session_steps, session_time = 0, 0.0
    for step in range(state.step + 1, cfg.max_steps + 1):
        t0 = time.perf_counter()
        lr = engine.get_lr()[0]  # the lr this step's update uses
        step_loss, grad_norm = optimizer_step(engine, batches, accum, pad_id, keep_ids)
        loss_value = _mean_across_ranks(step_loss, dist)
        elapsed = time.perf_counter() - t0
        session_steps, session_time = session_steps + 1, session_time + elapsed
        state.step, state.data_position = step, state.data_position + accum
        state.losses.append(loss_value)
        state.train_seconds += elapsed
        metrics = {"train/loss": loss_value, "train/lr": lr, "train/tokens_per_s": tokens_per_step / elapsed}
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm
        step_mfu = mfu(tokens_per_step / elapsed, flops_per_token or 0.0, peak, world)
        if step_mfu is not None and flops_per_token:
            metrics["train/mfu"] = step_mfu
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            state.val_loss = evaluate(engine, val_data, cfg, pad_id, keep_ids, dist)
            metrics.update({"val/loss": state.val_loss, "val/perplexity": _perplexity(state.val_loss)})
        if rank == 0:
            sink.log_metrics(metrics, step=step)
            log(_progress_line(step, cfg.max_steps, metrics))
        if on_step is not None:
            on_step(state)
    if on_step is not None:
        on_step(state, final=True)
    summary = _summary(state, cfg, tokens_per_step, world, engine.train_batch_size(), session_steps, session_time)
    # Over this attempt's steps, the first (allocator warm-up, kernel selection) included.
    summary["mfu"] = mfu(summary["tokens_per_s"], flops_per_token, peak, world) if flops_per_token else None
    return summary


def _summary(
    state: RunState, cfg: PretrainConfig, tokens_per_step: int, world: int, global_batch: int, session_steps: int, session_time: float
) -> dict[str, Any]:
    # Throughput of this attempt only: a resumed attempt's steps ran on this process's
    # hardware, the earlier ones possibly elsewhere. Losses span the whole run.
    return {
        "first_loss": state.losses[0],
        "final_loss": state.losses[-1],
        "val_loss": state.val_loss,
        "val_perplexity": _perplexity(state.val_loss),
        "tokens_per_s": tokens_per_step * (session_steps / session_time if session_time else len(state.losses) / max(state.train_seconds, 1e-9)),
        "steps": cfg.max_steps,
        "tokens_seen": tokens_per_step * cfg.max_steps,
        "world_size": world,
        "global_batch_size": global_batch,
        "train_seconds": state.train_seconds,
        "resumed_from": state.resumed_from,
        "generation": state.generation,
    }


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0)) if math.isfinite(loss) else float("nan")


def _progress_line(step: int, max_steps: int, m: dict[str, float]) -> str:
    parts = [f"step {step}/{max_steps}", f"loss {m['train/loss']:.4f}", f"lr {m['train/lr']:.2e}"]
    if "train/grad_norm" in m:
        parts.append(f"grad_norm {m['train/grad_norm']:.3f}")
    parts.append(f"tok/s {m['train/tokens_per_s']:.0f}")
    if "train/mfu" in m:
        parts.append(f"mfu {m['train/mfu']:.1%}")
    if "val/loss" in m:
        parts.append(f"val_loss {m['val/loss']:.4f} val_ppl {m['val/perplexity']:.2f}")
    return " | ".join(parts)


def save(engine, out: Path, tokenizer_dir: Path, summary: dict[str, Any], dist) -> None:
    """Rank 0 writes the HF model (safetensors), the tokenizer files and the summary."""
    out = Path(out)
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        # Under ZeRO-3 each rank holds a shard of every parameter: gather the full tensors
        # on all ranks (a collective), let rank 0 write them while they are whole.
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            if dist.get_rank() == 0:
                engine.module.save_pretrained(out)
    elif dist.get_rank() == 0:
        # transformers 5 always writes safetensors (the safe_serialization flag is gone).
        engine.module.save_pretrained(out)
    if dist.get_rank() == 0:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
        tmp.replace(out / "summary.json")
    dist.barrier()
