"""Architecture sizing from a compute budget, and a compute plan for the target hardware.

Given a budget C (FLOPs, or GPU-hours x peak x MFU), choose parameters N and tokens D:

- Chinchilla (Hoffmann et al. 2022): D = 20 N and C = 6 N D, so N = sqrt(C / 120);
- or a loss law the user fitted, L(N, D) = E + A / N^alpha + B / D^beta, whose
  compute-optimal split is N = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)).

N is then realized as a Llama shape (width, depth, heads, MLP width) whose parameter
count is closest to it, D is recomputed from the realized N, and the plan reports the
epochs the data allows and the wall time on the target hardware. Pure Python.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from phases.errors import ConfigError
from phases.hardware import HARDWARE, Hardware, hardware  # noqa: F401 (re-exported for the planner's callers)

# Named sizes: (hidden, layers, heads, intermediate). Intermediate ~ 8/3 hidden (SwiGLU).
SIZE_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (128, 2, 4, 352),
    "mini": (256, 4, 4, 688),
    "20M": (384, 6, 6, 1024),
    "60M": (512, 8, 8, 1376),
    "124M": (768, 12, 12, 2048),
    "350M": (1024, 24, 16, 2816),
    "760M": (1536, 24, 16, 4096),
    "1.3B": (2048, 24, 16, 5504),
    "2.7B": (2560, 32, 20, 6912),
    "6.7B": (4096, 32, 32, 11008),
}


def llama_parameters(vocab: int, hidden: int, layers: int, intermediate: int, tied: bool = True) -> int:
    """Exact parameter count of a Llama decoder with full multi-head attention (no biases)."""
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden
    embeddings = vocab * hidden * (1 if tied else 2)
    return layers * per_layer + embeddings + hidden


def chinchilla(budget_flops: float) -> tuple[float, float]:
    n = math.sqrt(budget_flops / 120.0)
    return n, 20.0 * n


def loss_law_optimum(budget_flops: float, law: dict[str, float]) -> tuple[float, float]:
    """Compute-optimal (N, D) under L = E + A/N^alpha + B/D^beta with C = 6 N D."""
    a, b, alpha, beta = law["A"], law["B"], law["alpha"], law["beta"]
    g = (alpha * a / (beta * b)) ** (1.0 / (alpha + beta))
    n = g * (budget_flops / 6.0) ** (beta / (alpha + beta))
    return n, budget_flops / (6.0 * n)


def target_parameters(budget_flops: float, law: dict[str, Any] | None) -> tuple[float, str]:
    """N for the budget: Chinchilla, a fitted L(N, D), or the frontier N = k C^a of a sweep."""
    if not law:
        return chinchilla(budget_flops)[0], "chinchilla"
    if all(k in law for k in ("A", "B", "alpha", "beta")):
        return loss_law_optimum(budget_flops, law)[0], "loss_law"
    frontier = law.get("frontier") or {}
    if "k" in frontier and "a" in frontier:
        return frontier["k"] * budget_flops ** frontier["a"], "sweep_frontier"
    raise ConfigError(
        "the loss law has neither A, B, alpha, beta (L = E + A/N^alpha + B/D^beta) nor a compute-optimal "
        "frontier {k, a}: a sweep at one token budget fits L(N) only; sweep several budgets, or give B and beta"
    )


def shape_for(target_params: float, vocab: int, aspect: float = 100.0) -> tuple[int, int, int, int]:
    """The (hidden, layers, heads, intermediate) closest to ``target_params``, width/depth near ``aspect``."""
    best = None
    for layers in range(2, 97):
        for hidden in range(64, 16385, 64):
            intermediate = 32 * math.ceil(hidden * 8 / 3 / 32)
            n = llama_parameters(vocab, hidden, layers, intermediate)
            score = abs(math.log(n / target_params)) + 0.05 * abs(math.log(hidden / layers / aspect))
            if best is None or score < best[0]:
                best = (score, (hidden, layers, max(1, hidden // 64), intermediate))
            if n > 2 * target_params:
                break
    assert best is not None
    return best[1]


SMALLEST_SHAPE = (64, 2, 1, 192)  # the smallest (hidden, layers, heads, intermediate) shape_for picks
MIN_SEQUENCES = 8  # a budget must buy the smallest model at least this many training sequences


def minimum_budget(vocab: int, seq_len: int) -> tuple[float, int]:
    """The least budget worth planning: the smallest shape trained on MIN_SEQUENCES sequences; and its N.

    Below Chinchilla's C = 120 N^2 for the smallest shape the plan still takes that shape and
    trains it on D = C / 6N tokens (fewer than 20 N): toy budgets stay plannable.
    """
    hidden, layers, _, inter = SMALLEST_SHAPE
    n = llama_parameters(vocab, hidden, layers, inter)
    return 6.0 * n * MIN_SEQUENCES * seq_len, n


def check_budget(budget_flops: float, vocab: int, seq_len: int) -> None:
    need, n = minimum_budget(vocab, seq_len)
    if budget_flops < need:
        raise ConfigError(
            f"budget {budget_flops:.3g} FLOPs is below the smallest preset's need ({need:.3g} FLOPs: {MIN_SEQUENCES} "
            f"sequences of {seq_len} tokens for {n:,} parameters at vocab {vocab}); raise the budget or lower model.vocab_size"
        )


def budget_from_gpu_hours(gpu_hours: float, gpu: str, mfu: float) -> float:
    hw = hardware(gpu)
    if hw.peak_flops is None:
        raise ConfigError(f"gpu {gpu!r} has no known peak FLOP/s; give the budget in FLOPs instead")
    return gpu_hours * 3600.0 * hw.peak_flops * mfu


@dataclass(frozen=True)
class Plan:
    budget_flops: float
    method: str
    target_parameters: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    parameters: int
    tokens: int
    tokens_available: int | None
    epochs: float | None
    gpu: str
    num_gpus: int
    mfu: float
    wall_time_hours: float | None
    precision: str
    zero_stage: int
    micro_batch_size: int
    grad_accum: int
    global_batch_sequences: int
    max_steps: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def zero_stage_for(parameters: int, hw: Hardware, num_gpus: int) -> int:
    """The lowest ZeRO stage whose per-device model + optimizer state fits in ~60% of memory.

    Mixed-precision Adam holds 16 bytes per parameter (2 weights + 2 grads + 12 fp32 master
    and moments); ZeRO-1 shards the 12, ZeRO-2 also the grads, ZeRO-3 everything.
    """
    budget = 0.6 * hw.memory_gib * 2**30
    per_stage = {
        0: 16 * parameters,
        1: 4 * parameters + 12 * parameters / num_gpus,
        2: 2 * parameters + 14 * parameters / num_gpus,
        3: 16 * parameters / num_gpus,
    }
    return next((s for s, need in per_stage.items() if need <= budget), 3)


def plan(
    *,
    vocab: int,
    seq_len: int,
    budget_flops: float | None = None,
    gpu_hours: float | None = None,
    gpu: str = "H100",
    num_gpus: int = 1,
    mfu: float = 0.4,
    tokens_available: int | None = None,
    loss_law: dict[str, float] | None = None,
    micro_batch_size: int = 8,
    global_batch_tokens: int | None = None,
) -> Plan:
    """Size a model and a run for the budget (see the module docstring)."""
    hw = hardware(gpu)
    if budget_flops is None:
        if gpu_hours is None:
            raise ConfigError("give a budget: --budget-flops X, or --gpu-hours H with --gpu NAME")
        budget_flops = budget_from_gpu_hours(gpu_hours, gpu, mfu)
    if budget_flops <= 0:
        raise ConfigError(f"budget {budget_flops:g} FLOPs must be positive")
    check_budget(budget_flops, vocab, seq_len)
    n_target, method = target_parameters(budget_flops, loss_law)
    hidden, layers, heads, inter = shape_for(n_target, vocab)
    n = llama_parameters(vocab, hidden, layers, inter)
    tokens = int(budget_flops / (6 * n))
    world = num_gpus
    batch_tokens = global_batch_tokens or (2**19 if n >= 1e8 else 2**16)
    global_seqs = max(world * micro_batch_size, batch_tokens // seq_len)
    accum = max(1, math.ceil(global_seqs / (world * micro_batch_size)))
    global_seqs = accum * world * micro_batch_size
    wall = budget_flops / (num_gpus * hw.peak_flops * mfu) / 3600 if hw.peak_flops else None
    return Plan(
        budget_flops=budget_flops,
        method=method,
        target_parameters=int(n_target),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=inter,
        parameters=n,
        tokens=tokens,
        tokens_available=tokens_available,
        epochs=round(tokens / tokens_available, 3) if tokens_available else None,
        gpu=hw.name,
        num_gpus=num_gpus,
        mfu=mfu,
        wall_time_hours=round(wall, 3) if wall is not None else None,
        precision="bf16" if hw.bf16 else ("fp16" if hw.peak_flops else "fp32"),
        zero_stage=zero_stage_for(n, hw, num_gpus),
        micro_batch_size=micro_batch_size,
        grad_accum=accum,
        global_batch_sequences=global_seqs,
        max_steps=max(1, tokens // (global_seqs * seq_len)),
    )
