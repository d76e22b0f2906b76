"""Test-wide settings: offline, isolated state, no analytics."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest


@pytest.fixture(autouse=True)
def _restore_environment():
    """configure() sets process-wide defaults (PREFECT_HOME, MLflow URI, ...): undo them after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
