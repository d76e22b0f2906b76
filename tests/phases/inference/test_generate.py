"""Generation through transformers' generate on a real toy model: greedy, top-k/top-p, seeds, stop strings."""

import json

import pytest
import torch

from phases.config import InferenceConfig
from phases.errors import DataError
from phases.inference.generate import generate, load_model, read_prompts
from phases.inference.sampling import generation_kwargs

PROMPTS = [{"prompt": p} for p in ("def read_config(path):", "The license grants", "import os\n", "# Installation\n", "x")]


@pytest.fixture(scope="module")
def loaded(toy_align):
    return load_model(toy_align)


def cfg(**kw):
    return InferenceConfig(**{"max_new_tokens": 12, "batch_size": 2, "temperature": 1.0, "top_p": 1.0, "chat": False, **kw})


def argmax_path(model, tokenizer, prompt: str, n: int) -> list[int]:
    """Greedy decoding by hand: full forward pass per step, no cache."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def test_greedy_is_deterministic_and_equals_the_argmax_path(loaded):
    model, tokenizer = loaded
    a = generate(model, tokenizer, PROMPTS, cfg(greedy=True, seed=1))
    b = generate(model, tokenizer, PROMPTS, cfg(greedy=True, seed=2, batch_size=5))
    assert [r["completion"] for r in a] == [r["completion"] for r in b]
    for row, rec in zip(PROMPTS, a):
        path = argmax_path(model, tokenizer, row["prompt"], rec["completion_tokens"])
        assert rec["completion"] == tokenizer.decode(path, skip_special_tokens=True)


def sampled_ids(model, tokenizer, prompt, settings, seed):
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, **generation_kwargs(settings, tokenizer.pad_token_id, None))
    return enc["input_ids"], out[0, enc["input_ids"].shape[1] :].tolist()


def own_probs(model, prefix, temperature):
    with torch.inference_mode():
        return torch.softmax(model(input_ids=prefix).logits[0, -1] / temperature, dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_only_emits_the_k_most_likely_tokens(loaded, seed):
    model, tokenizer = loaded
    settings = cfg(top_k=3, max_new_tokens=10)
    prefix, new = sampled_ids(model, tokenizer, "def read_config(path):", settings, seed)
    for tok in new:
        allowed = set(own_probs(model, prefix, 1.0).topk(3).indices.tolist())
        assert tok in allowed
        prefix = torch.cat([prefix, torch.tensor([[tok]])], dim=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_top_p_only_emits_tokens_inside_the_nucleus(loaded, seed):
    model, tokenizer = loaded
    settings = cfg(top_p=0.2, temperature=0.5, max_new_tokens=10)
    prefix, new = sampled_ids(model, tokenizer, "import os\n", settings, seed)
    for tok in new:
        p = own_probs(model, prefix, 0.5)
        mass_above = float(p[p > p[tok]].sum())  # probability of the tokens ranked above this one
        assert mass_above < 0.2 + 1e-5, f"token {tok} lies outside the 0.2 nucleus (mass above it {mass_above:.3f})"
        prefix = torch.cat([prefix, torch.tensor([[tok]])], dim=1)


def test_seeded_sampling_is_reproducible_and_seed_dependent(loaded):
    a, b, c = ([{k: v for k, v in r.items() if k != "latency_s"} for r in generate(*loaded, PROMPTS, cfg(seed=s))] for s in (3, 3, 4))
    assert a == b
    assert [r["completion"] for r in a] != [r["completion"] for r in c]


def test_caller_rng_state_is_untouched(loaded):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(*loaded, PROMPTS[:2], cfg(seed=0))
    assert torch.equal(torch.rand(3), expected)


def test_stop_strings_stop(loaded):
    model, tokenizer = loaded
    full = generate(model, tokenizer, PROMPTS[:1], cfg(greedy=True, max_new_tokens=24))[0]
    text = full["completion"]
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), f"pick a visible stop string from {text!r}"
    expected = text[: text.index(stop) + len(stop)]
    stopped = generate(model, tokenizer, PROMPTS[:1], cfg(greedy=True, max_new_tokens=24, stop=(stop,)))[0]
    assert stopped["completion"] == expected
    assert stopped["finish_reason"] == "stop" and full["finish_reason"] == "length"
    assert stopped["completion_tokens"] < full["completion_tokens"]


def test_records_and_several_samples_per_prompt(loaded):
    recs = generate(*loaded, PROMPTS[:3], cfg(num_return_sequences=3, max_new_tokens=5, top_k=10))
    assert len(recs) == 9
    assert [r["sample"] for r in recs] == [0, 1, 2] * 3
    assert [r["prompt"] for r in recs[::3]] == [p["prompt"] for p in PROMPTS[:3]]
    assert len({r["prompt_sha256"] for r in recs}) == 3
    r = recs[0]
    assert set(r) == {
        "prompt_sha256",
        "prompt",
        "sample",
        "completion",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
        "latency_s",
        "sampling",
    }
    assert 1 <= r["completion_tokens"] <= 5 and r["prompt_tokens"] > 0 and r["latency_s"] > 0
    assert r["sampling"]["top_k"] == 10


def test_chat_rows_use_the_template(loaded):
    model, tokenizer = loaded
    rec = generate(model, tokenizer, [{"messages": [{"role": "user", "content": "hi"}]}], cfg(max_new_tokens=3))[0]
    assert rec["prompt"].startswith("<|user|>\nhi") and rec["prompt"].endswith("<|assistant|>\n")


def test_a_prompt_longer_than_the_context_is_refused(loaded):
    with pytest.raises(DataError, match="prompt 0 has .* tokens"):
        generate(*loaded, [{"prompt": "word " * 400}], cfg())


def test_prompt_files(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text(
        json.dumps({"prompt": "a"})
        + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
        + "\n"
    )
    assert read_prompts(good) == [{"prompt": "a"}, {"messages": [{"role": "user", "content": "q"}]}]
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\nnot json\n')
    (tmp_path / "shape.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(DataError, match="holds no prompts"):
        read_prompts(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="bad.jsonl:2 is not JSON"):
        read_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="shape.jsonl:1: expected"):
        read_prompts(tmp_path / "shape.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        read_prompts(tmp_path / "missing.jsonl")
