"""The promotion decision: does the challenger replace the champion? Pure: no registry here.

The challenger wins when it beats the champion on the primary metric by more than the
margin, in the metric's direction (lm-eval's ``higher_is_better``), and no guard failed.
The first model ever evaluated becomes champion (guards are still recorded). A tie keeps
the champion: replacing a model in production needs evidence, not the absence of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Decision:
    promote: bool
    outcome: str  # first_champion | promoted | kept_champion | already_champion | blocked
    reason: str
    primary: str
    challenger_value: float | None
    champion_value: float | None
    margin: float
    higher_is_better: bool
    guards: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    primary: str,
    challenger: float,
    champion: float | None,
    *,
    margin: float,
    higher_is_better: bool,
    guards: Mapping[str, Mapping[str, Any]],
    same_model: bool = False,
) -> Decision:
    """``guards``: ``{name: {"ok": bool, "detail": str}}`` (capability, contamination)."""
    failed = sorted(g for g, v in guards.items() if not v.get("ok", False))
    common = dict(primary=primary, challenger_value=challenger, champion_value=champion, margin=margin, higher_is_better=higher_is_better)
    common["guards"] = {k: dict(v) for k, v in guards.items()}
    if same_model:
        return Decision(False, "already_champion", "the evaluated model already holds alias champion", **common)
    if champion is None:
        note = f" (guards failed: {', '.join(failed)})" if failed else ""
        return Decision(True, "first_champion", f"no champion yet: the first model evaluated becomes champion{note}", **common)
    if failed:
        return Decision(False, "blocked", f"guards failed: {', '.join(failed)}", **common)
    gain = challenger - champion if higher_is_better else champion - challenger
    word = "higher" if higher_is_better else "lower"
    if gain > margin:
        return Decision(
            True, "promoted", f"{primary} {challenger:.4g} vs champion {champion:.4g}: {gain:.4g} {word}, above margin {margin}", **common
        )
    return Decision(
        False, "kept_champion", f"{primary} {challenger:.4g} vs champion {champion:.4g}: gain {gain:.4g} does not exceed margin {margin}", **common
    )
