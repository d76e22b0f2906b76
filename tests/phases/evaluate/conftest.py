"""Evaluate-phase fixtures: a toy model that really memorized part of its training data."""

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import toy_artifacts

from phases.model import artifact

CANARY = "The vault canary says: seven three nine, quartz falcon 42 umbrella."
CANARY_COPIES = 24
SEQ_LEN = 64
MICRO_BATCH, STEPS, SEED = 8, 4, 0  # the recorded run: 4 steps of 8 rows = 32 of the corpus's rows
PASSES, LR = 120, 1e-2  # full-batch passes over those rows: a 64-wide model then reproduces them (loss ~0.01)


@dataclass(frozen=True)
class TrainedToy:
    """The phase outputs of a toy run: ``data_dir`` (train split, rejected/), ``model_dir`` (packed
    rows, train_docs.parquet, tokenizer/), ``pretrain_dir`` (the trained model, training_args.json,
    summary.json) and ``init_dir`` (the same model untrained). ``seen_rows``: the distinct rows the
    recorded run trains on; ``unseen_rows``: the others. ``duplicated_id``: a document the
    rejected/ table gives 3 removed copies."""

    data_dir: Path
    model_dir: Path
    pretrain_dir: Path
    init_dir: Path
    texts: list[str]
    canary: str
    seen_rows: np.ndarray
    unseen_rows: np.ndarray
    duplicated_id: str
    seconds: float


@contextmanager
def one_thread():
    """Toy-sized tensor work on one thread: on the shared 2-core machines two threads contend
    with the other jobs and were 5x slower (0.7 s against 0.13 s per training step here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _corpus() -> list[dict[str, str]]:
    """Varied documents (stdlib source in 400-character pieces, prose) with the canary planted
    CANARY_COPIES times among them, in a seeded order."""
    import textwrap

    code = toy_artifacts._module_sources(["textwrap"])[0][1][:9600]
    docs = [{"id": f"code/{i}", "source": "code", "text": code[i : i + 400]} for i in range(0, len(code), 400)]
    docs += [{"id": f"docs/{i}", "source": "docs", "text": textwrap.dedent(t)} for i, t in enumerate(toy_artifacts.PROSE)]
    docs += [{"id": f"canary/{i}", "source": "canary", "text": CANARY} for i in range(CANARY_COPIES)]
    order = np.random.default_rng(SEED).permutation(len(docs))
    return [docs[i] for i in order]


def _model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        max_position_embeddings=toy_artifacts.MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    return LlamaForCausalLM(config)


def _pack(tokenizer, docs, out: Path) -> np.ndarray:
    """The model phase's layout: each document's tokens then EOS, cut into rows of SEQ_LEN."""
    ids, starts, lengths = [], [], []
    for d in docs:
        tokens = tokenizer(d["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        starts.append(len(ids)), lengths.append(len(tokens))
        ids += tokens
    train = np.asarray(ids[: len(ids) // SEQ_LEN * SEQ_LEN]).reshape(-1, SEQ_LEN)
    arch = {"vocab_size": len(tokenizer), "max_position_embeddings": toy_artifacts.MAX_POSITIONS}
    artifact.write(out, tokenizer, arch, train, train[:2])
    table = {"id": [d["id"] for d in docs], "source": [d["source"] for d in docs], "start": starts, "length": lengths}
    pq.write_table(pa.table(table), out / "train_docs.parquet")
    return train


@pytest.fixture(scope="session")
def trained_toy(tmp_path_factory) -> TrainedToy:
    """A 64-wide, 2-layer Llama trained (plain AdamW) on the rows a recorded 4-step run sees,
    until it reproduces them, the canary among them; its untrained init beside it."""
    import torch

    from phases.pretrain.loop import PackedSequences

    began = time.perf_counter()
    root = tmp_path_factory.mktemp("memorization")
    docs = _corpus()
    data_dir = toy_artifacts.make_data_dir(root / "data", {"train": docs, "validation": docs[:2]})
    duplicated_id = next(d["id"] for d in docs if d["source"] == "code")
    (data_dir / "rejected").mkdir()
    rejected = [
        {"id": f"copy/{i}", "source": "code", "location": "x", "stage": "dedup", "reason": "exact_duplicate", "detail": duplicated_id, "chars": 400}
        for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rejected), data_dir / "rejected" / "part-00000.parquet")

    texts = [d["text"] for d in docs]
    tokenizer = toy_artifacts.train_tokenizer(sorted(set(texts)))
    model_dir = root / "model"
    train = _pack(tokenizer, docs, model_dir)
    meta = artifact.read_packed(model_dir)
    seen = np.unique(PackedSequences(model_dir / "train.bin", meta, rank=0, world_size=1, seed=SEED).rows_seen(MICRO_BATCH, 1, STEPS))

    model = _model(tokenizer)
    init_dir, pretrain_dir = root / "init", root / "pretrain"
    model.save_pretrained(init_dir), tokenizer.save_pretrained(init_dir)
    batch = torch.from_numpy(train[seen].astype(np.int64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    with one_thread():
        for _ in range(PASSES):
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    model.save_pretrained(pretrain_dir), tokenizer.save_pretrained(pretrain_dir)
    pretrain = {"max_steps": STEPS, "warmup_steps": 1, "micro_batch_size": MICRO_BATCH, "grad_accum": 1, "seed": SEED}
    (pretrain_dir / "training_args.json").write_text(json.dumps({"pretrain": pretrain, "model_dir": str(model_dir)}))
    (pretrain_dir / "summary.json").write_text(json.dumps({"steps": STEPS, "final_loss": loss.item()}))
    return TrainedToy(
        data_dir=data_dir,
        model_dir=model_dir,
        pretrain_dir=pretrain_dir,
        init_dir=init_dir,
        texts=texts,
        canary=CANARY,
        seen_rows=seen,
        unseen_rows=np.setdiff1d(np.arange(len(train)), seen),
        duplicated_id=duplicated_id,
        seconds=time.perf_counter() - began,
    )
