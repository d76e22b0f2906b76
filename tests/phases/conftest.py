"""Session fixtures shared by the phase tests: toy data, a toy model, packed validation rows.

They are built lazily, only by the tests that ask for them.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/phases/toy_artifacts.py

import toy_artifacts  # noqa: E402


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    return toy_artifacts.make_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def toy_pretrain(tmp_path_factory, toy_data):
    """A toy causal LM with its tokenizer, standing in for the pretrain (or align) output."""
    return toy_artifacts.make_model_dir(tmp_path_factory.mktemp("pretrain"), toy_data)


@pytest.fixture(scope="session")
def toy_packed(tmp_path_factory, toy_pretrain, toy_data):
    """A model-phase-like directory with packed val.bin for perplexity."""
    return toy_artifacts.make_packed_dir(tmp_path_factory.mktemp("model"), toy_pretrain, toy_data)


@pytest.fixture(scope="session")
def toy_align(tmp_path_factory, toy_data):
    """An align-phase-like output: toy model, tokenizer, sft_eval.jsonl and a reward_model/."""
    return toy_artifacts.make_align_dir(tmp_path_factory.mktemp("align"), toy_data)
