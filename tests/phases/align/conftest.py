"""Align-phase fixtures: a learnable preference set (for DPO and the reward model) and inputs."""

import json

import pytest
import toy_artifacts

from phases.align.recipes import derive_functions, question
from phases.data.io import read_split


@pytest.fixture(scope="session")
def align_inputs(toy_data, toy_pretrain):
    return {"data": toy_artifacts.ref("data", toy_data), "pretrain": toy_artifacts.ref("pretrain", toy_pretrain)}


@pytest.fixture(scope="session")
def style_preferences(tmp_path_factory, toy_data):
    """Preferences with a signal a toy model can learn in a few steps, and that SFT did not
    teach: the summary ending in "!" (chosen) against the same summary ending in "." (rejected).
    The SFT model, trained on docstrings that end in ".", prefers the rejected one, so
    preference accuracy starts near 0 and only preference training can raise it. The corpus recipe's
    signal (which summary fits which name) is too subtle for a random 32-wide model."""
    fns, _ = derive_functions(read_split(toy_data, "train"), 512, 0)
    path = tmp_path_factory.mktemp("prefs") / "style.jsonl"
    with path.open("w") as f:
        for fn in fns:
            f.write(
                json.dumps(
                    {"id": fn.qualname, "prompt": question(fn), "chosen": fn.summary.rstrip(".!?") + "!", "rejected": fn.summary.rstrip(".!?") + "."}
                )
                + "\n"
            )
    return path
