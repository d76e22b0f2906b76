"""Scaling-law fits from a sweep of model sizes (pure: numpy and scipy, no training).

``L(N) = E + A * N**-alpha`` on a fixed token budget (Kaplan et al. 2020; E is the loss no
model size removes at that budget). When the sweep spans several compute budgets
``C = 6 N D``, :func:`compute_optimal_frontier` keeps the best point per budget and fits
``N_opt = k * C**a`` (Hoffmann et al. 2022, approach 1). The fit is saved as JSON whose
keys (E, A, alpha) match the ``loss_law`` file the model phase's planner reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ScalingPoint:
    parameters: int
    tokens: int
    loss: float

    @property
    def compute(self) -> float:
        return 6.0 * self.parameters * self.tokens


@dataclass(frozen=True)
class ScalingFit:
    E: float
    A: float
    alpha: float
    points: tuple[ScalingPoint, ...] = ()
    frontier: dict[str, float] = field(default_factory=dict)  # {"k": ..., "a": ...} when budgets vary

    def predict(self, parameters: float | np.ndarray) -> float | np.ndarray:
        return power_law(np.asarray(parameters, dtype=float), self.E, self.A, self.alpha)


def power_law(n: np.ndarray, E: float, A: float, alpha: float) -> np.ndarray:
    return E + A * np.power(n, -alpha)


def fit_power_law(points: Sequence[ScalingPoint]) -> ScalingFit:
    """Least-squares fit of ``E + A N^-alpha``; needs 3 distinct sizes (3 unknowns).

    Fitted in units of the smallest N: A at N ~ 1e6 is a huge number next to E and alpha,
    and the solver converges badly on such unequal scales."""
    from scipy.optimize import curve_fit

    sizes = sorted({p.parameters for p in points})
    if len(sizes) < 3:
        raise ValueError(f"a power law with an offset needs at least 3 model sizes, got {len(sizes)}")
    n = np.array([p.parameters for p in points], dtype=float)
    loss = np.array([p.loss for p in points], dtype=float)
    scale = n.min()
    x = n / scale
    e0 = 0.5 * loss.min()
    p0 = (e0, max(loss.max() - e0, 1e-3), 0.3)
    bounds = ([0.0, 0.0, 1e-3], [loss.min(), np.inf, 3.0])  # E below every observed loss
    (E, a_scaled, alpha), _ = curve_fit(power_law, x, loss, p0=p0, bounds=bounds, maxfev=20000)
    return ScalingFit(
        E=float(E), A=float(a_scaled * scale**alpha), alpha=float(alpha), points=tuple(points), frontier=compute_optimal_frontier(points)
    )


def compute_optimal_frontier(points: Sequence[ScalingPoint]) -> dict[str, float]:
    """Best point per compute budget and ``N_opt = k * C**a`` through them (empty if < 2 budgets)."""
    by_budget: dict[float, list[ScalingPoint]] = {}
    for p in points:
        by_budget.setdefault(float(f"{p.compute:.6g}"), []).append(p)  # equal up to rounding: one budget
    # A budget with a single size says nothing about which size is best for it (a
    # fixed-token sweep gives every size its own budget): no frontier from those.
    best = {c: min(ps, key=lambda p: p.loss) for c, ps in by_budget.items() if len(ps) >= 2}
    if len(best) < 2:
        return {}
    c = np.log(np.array(sorted(best)))
    nopt = np.log(np.array([best[k].parameters for k in sorted(best)], dtype=float))
    a, log_k = np.polyfit(c, nopt, 1)
    return {"k": float(math.exp(log_k)), "a": float(a), "budgets": len(best)}


def save_fit(fit: ScalingFit, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "law": "L(N) = E + A * N^-alpha",
        "E": fit.E,
        "A": fit.A,
        "alpha": fit.alpha,
        "frontier": fit.frontier,
        "points": [asdict(p) for p in fit.points],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)  # a planner reading it never sees half a file
    return path


def load_fit(path: Path) -> ScalingFit:
    doc = json.loads(Path(path).read_text())
    points = tuple(ScalingPoint(**p) for p in doc.get("points", ()))
    return ScalingFit(E=doc["E"], A=doc["A"], alpha=doc["alpha"], points=points, frontier=doc.get("frontier", {}))


def plot_fit(fit: ScalingFit, path: Path) -> Path:
    """Loss against parameters (log x) with the fitted curve, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    n = np.array([p.parameters for p in fit.points], dtype=float)
    grid = np.geomspace(n.min() / 2, n.max() * 2, 200)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(n, [p.loss for p in fit.points], label="runs", zorder=3)
    ax.plot(grid, fit.predict(grid), label=f"E={fit.E:.3f} + A·N^-{fit.alpha:.3f}")
    ax.axhline(fit.E, linestyle=":", color="grey")
    ax.set(xscale="log", xlabel="parameters N", ylabel="validation loss", title="Scaling sweep")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
