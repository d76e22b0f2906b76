"""References passed between phases: where an output is and what it contains, never the data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PhaseRef:
    """A finished phase output: its directory, content fingerprint and headline figures."""

    phase: str
    key: str
    uri: str
    fingerprint: str
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.uri)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
