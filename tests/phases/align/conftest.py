"""Session fixtures for the align tests: toy data and a toy pretrained model."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/phases/toy_artifacts.py

import toy_artifacts  # noqa: E402


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    return toy_artifacts.make_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def toy_pretrain(tmp_path_factory, toy_data):
    return toy_artifacts.make_model_dir(tmp_path_factory.mktemp("pretrain"), toy_data)
