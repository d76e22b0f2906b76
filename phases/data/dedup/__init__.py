"""Near-duplicate removal by stage: signatures, candidates, verify, components, index (see run.py)."""

from phases.data.dedup.index import update_index
from phases.data.dedup.run import near_dedup

__all__ = ["near_dedup", "update_index"]
