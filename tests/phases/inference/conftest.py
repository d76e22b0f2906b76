import pytest
import toy_artifacts


@pytest.fixture(scope="session")
def toy_align(tmp_path_factory, toy_data):
    """An align-phase-like output: toy model, tokenizer, sft_eval.jsonl and a reward_model/."""
    return toy_artifacts.make_align_dir(tmp_path_factory.mktemp("align"), toy_data)
