"""Sampling settings and token counting, without a model."""

import pytest

from phases.config import InferenceConfig, load_config
from phases.errors import ConfigError
from phases.inference.sampling import batches, count_new_tokens, cut_at_stop, generation_kwargs, percentile, prompt_budget, summarize


def test_generation_kwargs_keep_top_k_zero_to_disable_it():
    kw = generation_kwargs(InferenceConfig(top_k=0, temperature=0.7, top_p=0.9, max_new_tokens=5), pad_token_id=2, eos_token_id=1)
    assert kw == {
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "max_new_tokens": 5,
        "pad_token_id": 2,
        "eos_token_id": 1,
        "use_cache": True,
        "num_return_sequences": 1,
    }
    assert generation_kwargs(InferenceConfig(top_k=20), 2, 1)["top_k"] == 20


def test_generation_kwargs_map_every_option():
    kw = generation_kwargs(InferenceConfig(min_p=0.1, repetition_penalty=1.3, stop=("\n\n",), num_return_sequences=4), 2, 1)
    assert (kw["min_p"], kw["repetition_penalty"], kw["stop_strings"], kw["num_return_sequences"]) == (0.1, 1.3, ["\n\n"], 4)
    greedy = generation_kwargs(InferenceConfig(greedy=True), 2, 1)
    assert greedy["do_sample"] is False and "num_return_sequences" not in greedy


@pytest.mark.parametrize(
    "override, match",
    [
        ("inference.top_p=0", "inference.top_p=0 is invalid"),
        ("inference.top_p=1.5", "inference.top_p=1.5 is invalid"),
        ("inference.temperature=-1", "inference.temperature=-1 is invalid"),
        ("inference.min_p=1", "inference.min_p=1 is invalid"),
        ("inference.best_of=0", "inference.best_of=0 is invalid"),
    ],
)
def test_bad_sampling_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", [override])


def test_greedy_with_several_samples_is_refused():
    with pytest.raises(ConfigError, match="num_return_sequences=1"):
        load_config("tiny", ["inference.greedy=true", "inference.num_return_sequences=3"])


def test_batches_keep_order():
    assert list(batches(["a", "b", "c", "d", "e"], 2)) == [["a", "b"], ["c", "d"], ["e"]]


def test_count_new_tokens_stops_at_first_eos_and_drops_trailing_pads():
    assert count_new_tokens([5, 6, 1, 2, 2], eos_token_id=1) == 3
    assert count_new_tokens([5, 6, 7], eos_token_id=1) == 3
    assert count_new_tokens([1, 1, 1], eos_token_id=1) == 1  # pad == eos
    assert count_new_tokens([5, 6], eos_token_id=None) == 2
    assert count_new_tokens([5, 6, 2, 2], eos_token_id=1, pad_token_id=2) == 2  # a stop string ended the row


def test_cut_at_stop_keeps_the_first_stop():
    assert cut_at_stop("ab\ncd\nef", ["\n"]) == ("ab\n", True)
    assert cut_at_stop("abcd", ["cd", "b"]) == ("ab", True)
    assert cut_at_stop("abcd", ["x"]) == ("abcd", False)


def test_prompt_budget():
    assert prompt_budget(256, 48) == 208
    assert prompt_budget(None, 48) is None
    with pytest.raises(ConfigError, match="max_new_tokens=256"):
        prompt_budget(256, 256)


def test_summarize_and_percentile():
    rows = [{"prompt_sha256": "a", "completion_tokens": 4}, {"prompt_sha256": "a", "completion_tokens": 2}]
    assert summarize(rows, 2.0) == {"num_prompts": 1, "num_completions": 2, "tokens_per_s": 3.0, "mean_new_tokens": 3.0}
    assert percentile([3, 1, 2], 50) == 2 and percentile([1, 2, 3, 4], 100) == 4
