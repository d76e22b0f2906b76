"""The six phases: their order, versions, inputs and build functions.

Every phase's logic is ``build(cfg, inputs, out, sink) -> summary``: ``cfg`` is its frozen
config section, ``inputs`` maps upstream phase names to :class:`PhaseRef`, ``out`` is an
empty staging directory to fill, ``sink`` receives metrics. :func:`run_phase` wraps it in a
keyed, atomically published output directory; a notebook can call it directly.
Bump a phase's ``version`` when its output format or semantics change: its key changes,
so stale outputs are not reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from phases.align import build as align
from phases.config import PHASE_NAMES, LifecycleConfig, Section
from phases.data import build as data
from phases.evaluate import build as evaluate
from phases.inference import build as inference
from phases.metrics import MetricsSink, NullSink
from phases.model import build as model
from phases.pretrain import build as pretrain
from phases.refs import PhaseRef
from phases.storage import is_complete, materialize, output_dir, phase_key, read_manifest, ref_from_dir


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    version: int
    inputs: tuple[str, ...]
    build: Callable[..., dict[str, Any]]  # phases/<name>/build.py: build(cfg, inputs, out, sink) -> summary
    headline: tuple[str, ...]  # summary keys printed at the end of a run
    records: tuple[str, ...] = ()  # globs of files that record how the output was made (logs, timings): not content

    def key(self, section: Section, inputs: Mapping[str, PhaseRef]) -> str:
        """The output's key: the one place it is computed."""
        return phase_key(self.name, self.version, section.model_dump(mode="json"), {n: inputs[n].fingerprint for n in self.inputs})


RECORDS = ("*.log", "metrics.jsonl")
PHASES: tuple[PhaseSpec, ...] = (
    PhaseSpec("data", 4, ("sources",), data.build, ("train_docs", "validation_docs", "exact_duplicates", "near_duplicates", "quarantined")),
    PhaseSpec("model", 1, ("data",), model.build, ("vocab_size", "train_tokens", "train_sequences", "parameters"), RECORDS),
    # summary.json, training_args.json (it names the staging directory) and the model card carry timings and paths.
    PhaseSpec(
        "pretrain",
        2,
        ("model",),
        pretrain.build,
        ("first_loss", "final_loss", "val_loss", "tokens_per_s"),
        (*RECORDS, "summary.json", "training_args.json", "README.md"),
    ),
    # stages.json carries each stage's seconds.
    PhaseSpec("align", 2, ("pretrain", "data"), align.build, ("sft_rows", "sft_eval_loss", "pref_accuracy", "ppl_rise"), (*RECORDS, "stages.json")),
    # Latencies and timings sit in the generation records and the quantization report.
    PhaseSpec(
        "inference",
        2,
        ("align", "model"),
        inference.build,
        ("num_prompts", "tokens_per_s", "int8_size_ratio", "int8_perplexity_rise", "best_of_status"),
        (*RECORDS, "generations.jsonl", "best_of.jsonl", "quantization.json"),
    ),
    # lm-eval's own results carry timings and the temporary paths of the task files.
    PhaseSpec(
        "evaluate",
        2,
        ("align", "pretrain", "data", "model"),
        evaluate.build,
        ("primary", "primary_value", "primary_stderr", "untrained_value", "val_perplexity", "contaminated_tasks", "memorized_rate"),
        (*RECORDS, "lm_eval/*.json"),
    ),
)
BY_NAME = {p.name: p for p in PHASES}
assert tuple(BY_NAME) == PHASE_NAMES, "phases.config.PHASE_NAMES and the registry disagree"


def sources_ref(cfg: LifecycleConfig) -> PhaseRef:
    """The data phase's external input: a fingerprint of the source files as they are now."""
    from phases.data.sources import fingerprint_sources

    fp, summary = fingerprint_sources(cfg.data.sources)
    return PhaseRef(phase="sources", key=fp[:20], uri=";".join(s.path or s.kind for s in cfg.data.sources), fingerprint=fp, summary=summary)


def why_built(name: str, section: Section, inputs: Mapping[str, PhaseRef], home: Path) -> str:
    """Why phase ``name`` has no finished output for this config: what differs from its latest one."""
    spec = BY_NAME[name]
    outputs = output_dir(home, name, "x").parent
    manifests = [read_manifest(p) for p in outputs.glob("*") if is_complete(p)] if outputs.is_dir() else []
    if not manifests:
        return "first build of this phase"
    last = max(manifests, key=lambda m: m.get("created_at", ""))
    if last.get("version") != spec.version:
        return f"phase version {last.get('version')} -> {spec.version} (its outputs' format or meaning changed)"
    reasons = []
    for n in spec.inputs:
        before = last.get("inputs", {}).get(n, {})
        if before.get("fingerprint") != inputs[n].fingerprint:
            if n == "sources":
                reasons.append(f"sources changed ({_sources_change(before.get('summary'), inputs[n].summary)})")
            else:
                reasons.append(f"input {n} changed ({str(before.get('fingerprint'))[:12]} -> {inputs[n].fingerprint[:12]})")
    changed = _changed_keys(last.get("config", {}), section.model_dump(mode="json"), name)
    if changed:
        reasons.append("config changed: " + ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""))
    return "; ".join(reasons) or f"its output was removed (last built {last.get('created_at')})"


def _sources_change(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> str:
    def fmt(s):
        return "?" if not s or s.get("bytes") is None else f"{s['files']} files, {s['bytes']:,} bytes"

    if not before:
        return "new or modified files"
    return ", ".join(f"{n}: {fmt(before.get(n))} -> {fmt(s)}" for n, s in now.items() if before.get(n) != s) or "file times changed"


def _changed_keys(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b)) for k in _changed_keys(a.get(key), b.get(key), f"{prefix}.{key}")]
    return [] if a == b else [prefix]


def finished_output(name: str, key: str, home: Path) -> PhaseRef | None:
    path = output_dir(home, name, key)
    return ref_from_dir(path) if is_complete(path) else None


def run_phase(
    name: str,
    section: Section,
    inputs: Mapping[str, PhaseRef],
    home: Path,
    *,
    key: str | None = None,
    sink: MetricsSink | None = None,
    extra: Mapping[str, Any] | None = None,
    reuse_only: bool = False,
) -> tuple[PhaseRef, bool]:
    """Build one phase's output (or reuse the finished one). Returns (ref, reused).

    ``key`` is the one the caller planned with :meth:`PhaseSpec.key` (computed here when
    omitted, e.g. from a notebook); ``reuse_only`` fails instead of building.
    """
    spec = BY_NAME[name]
    missing = [n for n in spec.inputs if n not in inputs]
    if missing:
        raise ValueError(f"phase {name} needs inputs {missing}")
    inputs = {n: inputs[n] for n in spec.inputs}
    manifest = {
        "version": spec.version,
        "config": section.model_dump(mode="json"),
        "inputs": {
            n: {"uri": r.uri, "fingerprint": r.fingerprint, "key": r.key, **({"summary": r.summary} if n == "sources" else {})}
            for n, r in inputs.items()
        },
        **(dict(extra) if extra else {}),
    }
    return materialize(
        home=Path(home),
        phase=name,
        key=key or spec.key(section, inputs),
        build=lambda out: spec.build(section, inputs, out, sink or NullSink()),
        manifest=manifest,
        records=spec.records,
        reuse_only=reuse_only,
    )
