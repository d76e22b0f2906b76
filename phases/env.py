"""The offline settings of the Hugging Face stack: one table, used by the flow, the phases and
every subprocess they start (nothing may come from a hub: every model and data set is local)."""

from __future__ import annotations

import os

OFFLINE: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",  # no fork warnings from dataloaders and Spark workers
}


def offline_env() -> None:
    """Set :data:`OFFLINE` where the environment does not say otherwise (before HF imports)."""
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)
