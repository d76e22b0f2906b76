"""The scaling-law fit recovers known laws; the fit survives a JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from phases.pretrain.scaling import ScalingPoint, compute_optimal_frontier, fit_power_law, load_fit, plot_fit, power_law, save_fit

E, A, ALPHA = 1.69, 406.4, 0.34  # Chinchilla's parametric fit (its N term)
SIZES = [2e5, 5e5, 1e6, 3e6, 1e7, 5e7, 2e8]


def _points(noise: float = 0.0, seed: int = 0) -> list[ScalingPoint]:
    rng = np.random.default_rng(seed)
    return [ScalingPoint(int(n), 10**8, float(power_law(n, E, A, ALPHA) * (1 + noise * rng.standard_normal()))) for n in SIZES]


def test_fit_recovers_exact_law():
    fit = fit_power_law(_points())
    assert (fit.E, fit.A, fit.alpha) == pytest.approx((E, A, ALPHA), rel=1e-4)


def test_fit_is_close_under_noise():
    fit = fit_power_law(_points(noise=0.002))
    assert fit.E == pytest.approx(E, rel=0.05) and fit.alpha == pytest.approx(ALPHA, rel=0.1)
    assert fit.predict(1e9) == pytest.approx(power_law(1e9, E, A, ALPHA), rel=0.01)


def test_fit_needs_three_sizes():
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law(_points()[:2])


def test_frontier_recovers_the_optimal_exponent():
    """Per budget C the best size is k * C^a (a = 0.5, Chinchilla); other sizes lose."""
    points = []
    for c in (1e15, 1e16, 1e17, 1e18):
        best = 0.1 * c**0.5
        for factor, loss in ((0.25, 3.0), (1.0, 2.0), (4.0, 3.0)):
            n = best * factor
            points.append(ScalingPoint(int(n), int(c / (6 * int(n))), loss))
    frontier = compute_optimal_frontier(points)
    assert frontier["a"] == pytest.approx(0.5, abs=1e-3) and frontier["budgets"] == 4
    assert compute_optimal_frontier(_points()) == {}  # one budget per size: no frontier


def test_save_load_and_plot(tmp_path):
    fit = fit_power_law(_points())
    path = save_fit(fit, tmp_path / "scaling" / "fit.json")
    back = load_fit(path)
    assert (back.E, back.A, back.alpha) == (fit.E, fit.A, fit.alpha) and back.points == fit.points
    png = plot_fit(fit, tmp_path / "fit.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
