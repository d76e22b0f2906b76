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
from phases.config import LifecycleConfig
from phases.data import build as data
from phases.evaluate import build as evaluate
from phases.inference import build as inference
from phases.model import build as model
from phases.pretrain import build as pretrain
from phases.metrics import MetricsSink, NullSink
from phases.refs import PhaseRef
from phases.storage import is_complete, materialize, output_dir, phase_key, ref_from_dir


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    version: int
    inputs: tuple[str, ...]
    build: Callable[..., dict[str, Any]]  # phases/<name>/build.py: build(cfg, inputs, out, sink) -> summary
    headline: tuple[str, ...]  # summary keys printed at the end of a run


PHASES: tuple[PhaseSpec, ...] = (
    PhaseSpec("data", 2, ("sources",), data.build, ("train_docs", "validation_docs", "exact_duplicates", "near_duplicates", "quarantined")),
    PhaseSpec("model", 1, ("data",), model.build, ("vocab_size", "train_tokens", "train_sequences", "parameters")),
    PhaseSpec("pretrain", 2, ("model",), pretrain.build, ("first_loss", "final_loss", "val_loss", "tokens_per_s")),
    PhaseSpec("align", 1, ("pretrain", "data"), align.build, ("num_pairs", "first_loss", "final_loss")),
    PhaseSpec("inference", 1, ("align",), inference.build, ("num_prompts", "tokens_per_s")),
    PhaseSpec("evaluate", 1, ("align", "data", "model"), evaluate.build, ("mc_acc", "val_perplexity")),
)
BY_NAME = {p.name: p for p in PHASES}


def sources_ref(cfg: LifecycleConfig) -> PhaseRef:
    """The data phase's external input: a fingerprint of the source files as they are now."""
    from phases.data.sources import fingerprint_sources

    fp, summary = fingerprint_sources(cfg.data.sources)
    return PhaseRef(phase="sources", key=fp[:20], uri=";".join(s.path or s.kind for s in cfg.data.sources), fingerprint=fp, summary=summary)


def key_for(spec: PhaseSpec, cfg: LifecycleConfig, inputs: Mapping[str, PhaseRef]) -> str:
    return phase_key(spec.name, spec.version, cfg.section(spec.name).model_dump(mode="json"), {n: r.fingerprint for n, r in inputs.items()})


def finished_output(spec: PhaseSpec, cfg: LifecycleConfig, inputs: Mapping[str, PhaseRef], home: Path) -> PhaseRef | None:
    path = output_dir(home, spec.name, key_for(spec, cfg, inputs))
    return ref_from_dir(path) if is_complete(path) else None


def run_phase(
    name: str,
    cfg: LifecycleConfig,
    inputs: Mapping[str, PhaseRef],
    home: Path,
    sink: MetricsSink | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[PhaseRef, bool]:
    """Build one phase's output (or reuse the finished one). Returns (ref, reused)."""
    spec = BY_NAME[name]
    missing = [n for n in spec.inputs if n not in inputs]
    if missing:
        raise ValueError(f"phase {name} needs inputs {missing}")
    section = cfg.section(name)
    fn = spec.build
    return materialize(
        home=Path(home),
        phase=name,
        version=spec.version,
        section=section.model_dump(mode="json"),
        inputs={n: inputs[n] for n in spec.inputs},
        build=lambda out: fn(section, {n: inputs[n] for n in spec.inputs}, out, sink or NullSink()),
        extra=extra,
    )
