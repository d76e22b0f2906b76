"""The Prefect cache key: the same hash that names the phase's output directory.

Prefect's default cache policy includes the flow-run id and sees only the task wrapper's
source, so nothing would be reused across runs. The explicit key (phase + phase version +
config section + input fingerprints, see ``phases.storage.phase_key``) makes a Prefect
cache hit and the on-disk skip agree.
"""

from __future__ import annotations

from typing import Any


def phase_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return f"lifecycle-{parameters['phase']}-{parameters['key']}"
