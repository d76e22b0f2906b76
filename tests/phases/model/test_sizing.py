"""The planner against the Chinchilla relations and a fitted loss law."""

import pytest

from flows.cli import main
from phases.errors import ConfigError
from phases.model.sizing import (
    HARDWARE,
    SIZE_PRESETS,
    budget_from_gpu_hours,
    chinchilla,
    llama_parameters,
    loss_law_optimum,
    plan,
    shape_for,
    zero_stage_for,
)
from phases.pretrain.dsconfig import deepspeed_for_plan as deepspeed_for

CHINCHILLA_FIT = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, approach 3


@pytest.mark.parametrize("budget", [1e17, 1e19, 1e21, 5.76e23])
def test_plan_follows_chinchilla(budget):
    p = plan(vocab=32000, seq_len=2048, budget_flops=budget, gpu="H100")
    n_opt, d_opt = chinchilla(budget)
    assert d_opt == pytest.approx(20 * n_opt) and 6 * n_opt * d_opt == pytest.approx(budget)
    # The realized shape is within 10% of N; D is recomputed so that C = 6 N D still holds.
    assert p.parameters == pytest.approx(n_opt, rel=0.10)
    assert 6 * p.parameters * p.tokens == pytest.approx(budget, rel=1e-6)
    assert p.tokens / p.parameters == pytest.approx(20, rel=0.25)


def test_chinchilla_scale_matches_the_paper():
    # Chinchilla itself: 5.76e23 FLOPs -> about 70B parameters and 1.4T tokens.
    n, d = chinchilla(5.76e23)
    assert n == pytest.approx(69.3e9, rel=0.02) and d == pytest.approx(1.39e12, rel=0.02)


def test_loss_law_optimum_minimizes_the_law():
    c = 1e21
    n_opt, d_opt = loss_law_optimum(c, CHINCHILLA_FIT)
    assert 6 * n_opt * d_opt == pytest.approx(c)

    def loss(n):
        f = CHINCHILLA_FIT
        return f["E"] + f["A"] / n ** f["alpha"] + f["B"] / (c / (6 * n)) ** f["beta"]

    grid = [n_opt * 10 ** (k / 100) for k in range(-100, 101)]
    assert min(grid, key=loss) == pytest.approx(n_opt, rel=0.03)
    assert plan(vocab=32000, seq_len=2048, budget_flops=c, loss_law=CHINCHILLA_FIT).method == "loss_law"


@pytest.mark.parametrize("target", [2e6, 3e7, 1.2e8, 1.3e9, 7e9])
def test_shape_realizes_the_parameter_count(target):
    hidden, layers, heads, inter = shape_for(target, 32000)
    assert hidden % 64 == 0 and hidden % heads == 0 and layers >= 2
    assert llama_parameters(32000, hidden, layers, inter) == pytest.approx(target, rel=0.10)


def test_parameter_count_matches_transformers():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, inter = SIZE_PRESETS["mini"]
    with torch.device("meta"):
        m = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=1000,
                hidden_size=hidden,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=heads,
                intermediate_size=inter,
                tie_word_embeddings=True,
            )
        )
    assert sum(p.numel() for p in m.parameters()) == llama_parameters(1000, hidden, layers, inter)


def test_gpu_hours_epochs_and_wall_time():
    c = budget_from_gpu_hours(100, "H100", 0.5)
    assert c == pytest.approx(100 * 3600 * 989e12 * 0.5)
    p = plan(vocab=32000, seq_len=1024, gpu_hours=100, gpu="H100", mfu=0.5, num_gpus=4, tokens_available=10**9)
    assert p.wall_time_hours == pytest.approx(25, rel=1e-3)
    assert p.epochs == pytest.approx(p.tokens / 1e9, rel=1e-3)
    assert p.global_batch_sequences == p.micro_batch_size * p.grad_accum * 4


def test_zero_stage_and_precision_follow_the_hardware():
    assert zero_stage_for(124_000_000, HARDWARE["H100"], 1) == 0
    assert zero_stage_for(7_000_000_000, HARDWARE["H100"], 1) == 3
    assert zero_stage_for(7_000_000_000, HARDWARE["H100"], 8) in (1, 2)
    assert plan(vocab=32000, seq_len=2048, budget_flops=1e20, gpu="V100").precision == "fp16"
    ds = deepspeed_for(plan(vocab=32000, seq_len=2048, budget_flops=1e20, gpu="H100", num_gpus=8))
    assert ds["bf16"]["enabled"] is True and ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 8


def test_too_small_a_budget_is_refused():
    with pytest.raises(ConfigError, match="below the smallest preset"):
        plan(vocab=32000, seq_len=2048, budget_flops=1e9)
    with pytest.raises(ConfigError, match="unknown GPU"):
        plan(vocab=32000, seq_len=2048, budget_flops=1e20, gpu="TPU")


def test_plan_command_json(capsys):
    import json

    assert main(["plan", "--budget-flops", "1e20", "--tokens-available", "1e9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["tokens"] == int(1e20 / (6 * out["plan"]["parameters"]))
    assert out["deepspeed"]["zero_optimization"]["stage"] == out["plan"]["zero_stage"]
    assert main(["plan", "--budget-flops", "1e9"]) == 2
    assert "below the smallest preset" in capsys.readouterr().err


def test_a_sweep_frontier_or_a_fixed_budget_fit():
    p = plan(vocab=32000, seq_len=2048, budget_flops=1e20, loss_law={"E": 1.7, "A": 400, "alpha": 0.3, "frontier": {"k": 0.1, "a": 0.5}})
    assert p.method == "sweep_frontier" and p.target_parameters == int(0.1 * 1e20**0.5)
    with pytest.raises(ConfigError, match="fits L\\(N\\) only"):
        plan(vocab=32000, seq_len=2048, budget_flops=1e20, loss_law={"E": 1.7, "A": 400, "alpha": 0.3, "frontier": {}})
