"""Phase 4: align the pretrained model. SFT on chat data, then by ``align.method``:
DPO (``dpo``), or a reward model and online RL against it (``grpo`` / ``rloo``).

Each stage trains in-process with its TRL trainer and logs into its own nested sink (an
MLflow child run under the phase's run). Data comes from the corpus recipe
(:mod:`phases.align.recipes`) or the user's JSONL (``align.sft_data`` / ``align.preference_data``),
validated first: bad rows are quarantined with a reason, and a data set with no usable row
fails before any training. The capability check measures validation perplexity before and
after each stage (:mod:`phases.align.capability`).

``out`` receives exactly: the aligned model and tokenizer (top level, what inference and
evaluate load), ``sft_train.jsonl`` / ``sft_eval.jsonl`` / ``preference_train.jsonl`` /
``preference_eval.jsonl``, ``quarantine.jsonl``, ``capability.json``, ``samples.json``,
``stages.json``, for grpo/rloo (or ``align.reward_model``) ``reward_model/``, and with
``align.lora`` the LoRA adapters of SFT and DPO in ``adapters/<stage>/`` (the published
model has them merged).
Trainer scratch stays in a temporary directory.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from phases.align import data as D
from phases.align.capability import CapabilityCheck, validation_rows
from phases.align.recipes import PairStats, derive_functions, instruction_rows, preference_rows
from phases.align.tracking import export_adapter, generate_samples, quiet_libraries, sink_callback
from phases.config import AlignConfig
from phases.data.io import read_split
from phases.env import offline_env
from phases.errors import DataError
from phases.metrics import MetricsSink, nested, write_table
from phases.refs import PhaseRef

log = logging.getLogger("lifecycle.align")


def no_pairs_message(stats: PairStats, data_dir: Path) -> str:
    if stats.docs_parsed == 0:
        return (
            f"no instruction pairs: none of the {stats.docs_seen} train documents under {data_dir} parses as Python "
            f"(failures by source: {stats.failures_by_kind}); add a Python source (e.g. kind python_stdlib) to data.sources"
        )
    return (
        f"no instruction pairs: {stats.docs_parsed} train documents parse as Python but contain no public function "
        f"with a docstring ({stats.functions_seen} functions seen); add documented Python sources to data.sources"
    )


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    from phases.model.tokenizer import CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:  # the collators pad with it; eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    if "{% generation %}" not in (tokenizer.chat_template or ""):
        # A tokenizer saved before the template carried TRL's markers: assistant_only_loss needs them.
        log.warning("align: the tokenizer's chat template has no {%% generation %%} markers; using the project's template")
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def load_data(cfg: AlignConfig, data_dir: Path, tokenizer, sink: MetricsSink) -> tuple[D.Split, D.Split | None]:
    """The SFT and (for methods after SFT) preference splits, validated; DataError when unusable."""
    needs_preferences = cfg.method != "sft" or cfg.reward_model
    recipe_rows: dict[str, list[dict[str, Any]]] = {}
    if cfg.sft_data is None or (needs_preferences and cfg.preference_data is None):
        fns, stats = derive_functions(read_split(data_dir, "train"), cfg.num_pairs, cfg.seed)
        sink.log_params({f"align.pairs.{k}": v for k, v in stats.to_dict().items()})
        if not fns:
            raise DataError(no_pairs_message(stats, data_dir))
        recipe_rows = {"sft": instruction_rows(fns), "preference": preference_rows(fns, cfg.seed)}

    def split(name, path, normalize, length):
        rows, source = (D.read_jsonl(path), str(path)) if path else (recipe_rows[name], f"corpus recipe over {data_dir}")
        return D.prepare(name, rows, source, normalize, length, tokenizer, cfg.max_length, cfg.eval_fraction)

    sft = split("sft", cfg.sft_data, D.normalize_sft, D.sft_lengths)
    pref = split("preference", cfg.preference_data, D.normalize_preference, D.preference_lengths) if needs_preferences else None
    return sft, pref


def held_out_prompts(sft: D.Split, n: int) -> list[list[dict[str, str]]]:
    """The first ``n`` held-out conversations up to (without) their first assistant turn."""
    prompts = []
    for row in sft.eval[:n]:
        turns = row["messages"]
        first = next(i for i, t in enumerate(turns) if t["role"] == "assistant")
        prompts.append(turns[:first])
    return prompts


@dataclass
class Stages:
    """The stages of one phase run: each trains in its own nested sink, then the capability check runs."""

    cfg: AlignConfig
    out: Path
    scratch: Path
    tokenizer: Any
    sink: MetricsSink
    check: CapabilityCheck
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def finish(self, name: str, stage_sink: MetricsSink, figures: dict[str, Any], started: float, model=None) -> None:
        figures["seconds"] = time.perf_counter() - started
        if model is not None:
            row = self.check.measure(name, model)
            figures.update({"val_perplexity": row["perplexity"], "ppl_rise": row["rise"]})
        stage_sink.log_metrics({f"{name}/{k}": v for k, v in figures.items() if isinstance(v, (int, float))})
        self.figures[name] = figures
        log.info("align %s done: %s", name, {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()})
        if model is not None:
            msg = self.check.enforce(row)  # raises CapabilityError when on_ppl_rise=fail
            if msg:
                self.warnings.append(msg)

    def sft(self, model, data: D.Split):
        from phases.align import sft

        with nested(self.sink, "sft") as stage_sink:
            stage_sink.log_params(stage_params(self.cfg, "sft"))
            history: list[dict[str, float]] = []
            started = time.perf_counter()
            model, figures = sft.run(
                self.cfg,
                model,
                self.tokenizer,
                data.train,
                data.eval[: self.cfg.eval_rows],
                str(self.scratch / "sft"),
                [sink_callback(stage_sink, "sft", history)],
            )
            losses = [h["train/loss"] for h in history if "train/loss" in h]
            figures.update({"first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None})
            model = export_adapter(model, self.out / "adapters" / "sft")
            self.finish("sft", stage_sink, figures, started, model)
        return model

    def reward(self, sft_dir: Path, data: D.Split):
        from phases.align import reward

        with nested(self.sink, "reward") as stage_sink:
            stage_sink.log_params(stage_params(self.cfg, "reward"))
            started = time.perf_counter()
            model, figures = reward.run(
                self.cfg,
                sft_dir,
                self.tokenizer,
                data.train,
                data.eval[: self.cfg.eval_rows],
                str(self.scratch / "reward"),
                [sink_callback(stage_sink, "reward", [])],
            )
            self.finish("reward", stage_sink, figures, started)
        model.save_pretrained(self.out / "reward_model")
        self.tokenizer.save_pretrained(self.out / "reward_model")
        return model

    def dpo(self, model, sft_dir: Path, data: D.Split):
        import torch
        from transformers import AutoModelForCausalLM

        from phases.align import preference

        # An explicit reference (TRL would look for one on the hub); with LoRA, the adapter-disabled base.
        ref_model = None if self.cfg.lora else AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32).eval()
        with nested(self.sink, "dpo") as stage_sink:
            stage_sink.log_params(stage_params(self.cfg, "dpo"))
            started = time.perf_counter()
            model, figures = preference.run(
                self.cfg,
                model,
                ref_model,
                self.tokenizer,
                data.train,
                data.eval[: self.cfg.eval_rows],
                str(self.scratch / "dpo"),
                [sink_callback(stage_sink, "dpo", [])],
            )
            model = export_adapter(model, self.out / "adapters" / "dpo")
            self.finish("dpo", stage_sink, figures, started, model)
        return model

    def online(self, sft_dir: Path, reward_model, data: D.Split):
        import copy

        from phases.align import online

        method = self.cfg.method
        with nested(self.sink, method) as stage_sink:
            stage_sink.log_params(stage_params(self.cfg, "online"))
            started = time.perf_counter()
            history: list[dict[str, float]] = []
            # A copy: the trainer sets left padding on its tokenizer, the reward model reads right-padded rows.
            model, figures = online.run(
                self.cfg,
                sft_dir,
                reward_model,
                copy.deepcopy(self.tokenizer),
                data.train,
                str(self.scratch / method),
                [sink_callback(stage_sink, method, history)],
            )
            for key in ("reward", "kl", "completions/mean_length"):
                values = [h[key] for h in history if key in h]
                if values:
                    figures[f"last_{key.replace('/', '_')}"] = values[-1]
            self.finish(method, stage_sink, figures, started, model)
        return model


def build(cfg: AlignConfig, inputs: Mapping[str, PhaseRef], out: Path, sink: MetricsSink) -> dict[str, Any]:
    offline_env()
    quiet_libraries()
    data_dir, model_dir, out = inputs["data"].path, inputs["pretrain"].path, Path(out)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = load_tokenizer(model_dir)
    sft_data, pref_data = load_data(cfg, data_dir, tokenizer, sink)  # DataError here, before any training
    quarantined = publish_data(out, [s for s in (sft_data, pref_data) if s is not None], sink)

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    texts = [r["text"] for r in read_split(data_dir, "validation")]
    check = CapabilityCheck(
        validation_rows(texts, tokenizer, cfg.max_length, cfg.ppl_rows), cfg.max_ppl_rise, cfg.on_ppl_rise, batch_size=cfg.batch_size
    )
    check.measure("pretrained", model)
    prompts = held_out_prompts(sft_data, cfg.num_samples)
    samples_before = generate_samples(model, tokenizer, prompts, cfg.sample_tokens)

    with tempfile.TemporaryDirectory(prefix="align-") as scratch:
        stages = Stages(cfg, out, Path(scratch), tokenizer, sink, check)
        model = stages.sft(model, sft_data)
        sft_dir = Path(scratch) / "sft-model"  # the reference of DPO / GRPO / RLOO and the reward backbone
        model.save_pretrained(sft_dir)
        tokenizer.save_pretrained(sft_dir)
        reward_model = stages.reward(sft_dir, pref_data) if cfg.method in ("grpo", "rloo") or cfg.reward_model else None
        if cfg.method == "dpo":
            model = stages.dpo(model, sft_dir, pref_data)
        elif cfg.method in ("grpo", "rloo"):
            model = stages.online(sft_dir, reward_model, pref_data)

    samples = [
        {"prompt": p[-1]["content"], "reference": row["messages"][len(p)]["content"], "before": b, "after": a}
        for p, row, b, a in zip(prompts, sft_data.eval, samples_before, generate_samples(model, tokenizer, prompts, cfg.sample_tokens))
    ]
    (out / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False))
    (out / "capability.json").write_text(json.dumps({"max_ppl_rise": cfg.max_ppl_rise, "table": check.table}, indent=2))
    (out / "stages.json").write_text(json.dumps(stages.figures, indent=2, default=str))
    if samples:
        write_table(samples, "align_samples.json", sink)
    write_table(check.table, "align_capability.json", sink)

    model.save_pretrained(out)  # safetensors is the only format transformers 5 writes
    tokenizer.save_pretrained(out)
    summary = make_summary(cfg, stages, sft_data, pref_data, quarantined)
    sink.log_metrics({f"align/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
    return summary


def publish_data(out: Path, splits: list[D.Split], sink: MetricsSink) -> int:
    """The rows each stage trains and is evaluated on, and the quarantined ones; returns how many were quarantined."""
    for s in splits:
        D.write_jsonl(out / f"{s.name}_train.jsonl", s.train)
        D.write_jsonl(out / f"{s.name}_eval.jsonl", s.eval)
        sink.log_params({f"align.data.{s.name}.source": s.source})
        sink.log_metrics({f"align/data/{s.name}/{k}": v for k, v in s.counts().items()})
        log.info("align data %s: %s (from %s)", s.name, s.counts(), s.source)
    return D.write_quarantine(out / "quarantine.jsonl", splits)


def make_summary(cfg: AlignConfig, stages: Stages, sft_data: D.Split, pref_data: D.Split | None, quarantined: int) -> dict[str, Any]:
    table, sft = stages.check.table, stages.figures["sft"]
    summary: dict[str, Any] = {
        "method": cfg.method,
        "sft_rows": len(sft_data.train),
        "preference_rows": len(pref_data.train) if pref_data else 0,
        "quarantined": quarantined,
        "sft_eval_loss_before": sft["eval_loss_before"],
        "sft_eval_loss": sft["eval_loss_after"],
        "first_loss": sft["first_loss"],
        "final_loss": sft["final_loss"],
        "steps": sft["steps"],
        "ppl_pretrained": table[0]["perplexity"],
        "ppl_aligned": table[-1]["perplexity"],
        "ppl_rise": table[-1]["rise"],
        "ppl_warnings": len(stages.warnings),
        "num_pairs": len(sft_data.train) + len(sft_data.eval),  # the current registry headline; prefer sft_rows
    }
    if "dpo" in stages.figures:
        dpo = stages.figures["dpo"]
        summary.update(
            {
                "pref_accuracy_sft": dpo["pref_accuracy_before"],
                "pref_accuracy": dpo["pref_accuracy_after"],
                "implicit_accuracy": dpo["implicit_accuracy"],
            }
        )
    if "reward" in stages.figures:
        summary.update({"reward_accuracy": stages.figures["reward"]["accuracy"], "reward_accuracy_stderr": stages.figures["reward"]["stderr"]})
    online = stages.figures.get(cfg.method, {})
    for key in ("last_reward", "last_kl"):
        if key in online:
            summary[key.removeprefix("last_")] = online[key]
    return summary


def stage_params(cfg: AlignConfig, stage: str) -> dict[str, Any]:
    """The params of a stage's own run (MLflow refuses a changed param within one run, so each stage has its own)."""
    keys = {
        "sft": ("max_steps", "batch_size", "lr", "max_length", "seed", "eval_fraction", "lora"),
        "reward": ("reward_steps", "reward_lr", "batch_size", "max_length", "seed"),
        "dpo": ("dpo_steps", "dpo_lr", "dpo_beta", "batch_size", "max_length", "seed", "lora"),
        "online": ("method", "online_steps", "online_lr", "online_beta", "num_generations", "max_completion_length", "seed"),
    }[stage]
    return {k: getattr(cfg, k) for k in keys}
