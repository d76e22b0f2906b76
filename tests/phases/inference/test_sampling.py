"""Sampling settings and token counting, without a model."""

import pytest

from phases.config import InferenceConfig
from phases.errors import ConfigError
from phases.inference.sampling import batches, count_new_tokens, generation_kwargs, prompt_budget, summarize


def test_generation_kwargs_keep_top_k_zero_to_disable_it():
    kw = generation_kwargs(InferenceConfig(top_k=0, temperature=0.7, top_p=0.9, max_new_tokens=5), pad_token_id=2, eos_token_id=1)
    assert kw == {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "max_new_tokens": 5, "pad_token_id": 2, "eos_token_id": 1}
    assert generation_kwargs(InferenceConfig(top_k=20), 2, 1)["top_k"] == 20


def test_batches_keep_order():
    assert list(batches(["a", "b", "c", "d", "e"], 2)) == [["a", "b"], ["c", "d"], ["e"]]


def test_count_new_tokens_stops_at_first_eos():
    assert count_new_tokens([5, 6, 1, 2, 2], eos_token_id=1) == 3
    assert count_new_tokens([5, 6, 7], eos_token_id=1) == 3
    assert count_new_tokens([1, 1, 1], eos_token_id=1) == 1  # pad == eos
    assert count_new_tokens([5, 6], eos_token_id=None) == 2


def test_prompt_budget():
    assert prompt_budget(256, 48) == 208
    assert prompt_budget(None, 48) is None
    with pytest.raises(ConfigError, match="max_new_tokens=256"):
        prompt_budget(256, 256)


def test_summarize():
    rows = [{"new_tokens": 4}, {"new_tokens": 2}]
    assert summarize(rows, 2.0) == {"num_prompts": 2, "tokens_per_s": 3.0, "mean_new_tokens": 3.0}
