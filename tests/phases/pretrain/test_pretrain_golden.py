"""Golden loss trajectory: the tiny preset's pretrain settings and architecture, 40 steps.

The corpus is made here (a seeded grammar, a BPE tokenizer trained on it), so the figures
depend on the numerics of torch/DeepSpeed/transformers, not on what is installed on the
machine. A change in any of those, in the loop, the data order or the lr schedule shows up
as a mismatch. Regenerate after an intended change with
``LIFECYCLE_REGEN_GOLDEN=1 .venv/bin/pytest tests/phases/pretrain/test_pretrain_golden.py -m e2e``
and commit the file with the change that explains it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phases.config import load_config
from phases.metrics import ListSink
from phases.model import artifact
from phases.pretrain.build import build
from phases.refs import PhaseRef
from tests.phases.pretrain.conftest import made_up_documents, pack, train_tokenizer

pytestmark = pytest.mark.e2e

GOLDEN = Path(__file__).parent / "golden" / "tiny_pretrain_loss.tsv"
STEPS = 40
REL_TOL = 1e-5


def _tiny_model_dir(root: Path) -> Path:
    tiny = load_config("tiny")
    train_docs, val_docs = made_up_documents(1200, seed=7), made_up_documents(120, seed=8)
    tokenizer = train_tokenizer(train_docs, vocab_size=tiny.model.vocab_size)  # the grammar caps it far below
    seq_len = tiny.model.seq_len
    artifact.write(
        root, tokenizer, tiny_architecture(tiny.model, tokenizer), pack(tokenizer, train_docs, seq_len), pack(tokenizer, val_docs, seq_len)
    )
    return root


def tiny_architecture(m, tokenizer) -> dict:
    """The tiny preset's decoder as the model phase sizes it (phases/model/build.py),
    spelled out here so that the golden figures pin this exact architecture."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_heads,
        max_position_embeddings=m.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).to_dict()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> PhaseRef:
    root = _tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))
    return PhaseRef(phase="model", key="golden", uri=str(root), fingerprint="golden-corpus")


def _train(cfg, ref, tmp: Path, name: str) -> ListSink:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # thread count changes reduction order
        mp.setenv("LIFECYCLE_HOME", str(tmp / f"{name}-home"))
        sink = ListSink()
        build(cfg, {"model": ref}, tmp / name, sink)
    return sink


def read_golden(path: Path = GOLDEN) -> list[tuple[int, float]]:
    rows = [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return [(int(step), float(loss)) for step, loss in rows[1:]]  # rows[0] is the header


@pytest.fixture(scope="module")
def golden_run(tiny_model, tmp_path_factory) -> ListSink:
    cfg = load_config("tiny").pretrain.model_copy(update={"max_steps": STEPS})
    return _train(cfg, tiny_model, tmp_path_factory.mktemp("golden"), "out")


def test_loss_trajectory_matches_golden(golden_run):
    losses = golden_run.series("train/loss")
    assert len(losses) == STEPS
    if os.environ.get("LIFECYCLE_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(
            "# tiny preset pretrain + architecture, 40 steps, see test_pretrain_golden.py\n"
            "step\tloss\n" + "".join(f"{i}\t{v!r}\n" for i, v in enumerate(losses, 1))
        )
        pytest.skip(f"regenerated {GOLDEN}")
    golden = read_golden()
    assert [s for s, _ in golden] == list(range(1, STEPS + 1))
    off = [(s, want, got) for (s, want), got in zip(golden, losses) if abs(got - want) > REL_TOL * abs(want)]
    assert not off, f"{len(off)} steps off the golden trajectory (step, golden, now): {off[:5]}"


def test_activation_checkpointing_keeps_the_trajectory(golden_run, tiny_model, tmp_path):
    """Recomputing activations in backward changes memory, not math. During the preset's
    10 warmup steps the lr does not depend on max_steps, so an 11-step run's first 10
    losses must equal the golden run's."""
    tiny = load_config("tiny").pretrain
    cfg = tiny.model_copy(update={"max_steps": tiny.warmup_steps + 1, "activation_checkpointing": True})
    losses = _train(cfg, tiny_model, tmp_path, "ckpt").series("train/loss")[: tiny.warmup_steps]
    assert losses == pytest.approx(golden_run.series("train/loss")[: tiny.warmup_steps], rel=REL_TOL)
