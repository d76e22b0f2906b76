"""A toy model-phase output: the exact layout phases.pretrain.build.build reads.

tokenizer/ (byte-level BPE, bos/eos/pad), model_config.json (a 2-layer, 32-wide Llama),
train.bin / val.bin (uint16 rows of 32 tokens packed from made-up text), packed.json.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from phases.model import artifact

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>")
SEQ_LEN = 32
SUBJECTS = ["the parser", "a worker", "the scheduler", "our cache", "the tokenizer", "each rank", "the loader"]
VERBS = ["reads", "writes", "skips", "merges", "sorts", "checks", "packs"]
OBJECTS = ["the config file", "every shard", "a small batch", "the log line", "two tokens", "the manifest"]
ENDINGS = ["before it starts.", "and then stops.", "when asked.", "in order.", "twice a day."]


def made_up_documents(n_docs: int, seed: int) -> list[str]:
    """Short documents from a tiny grammar: structured enough that the loss visibly falls."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = [
            f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}" for _ in range(rng.randint(2, 5))
        ]
        docs.append(" ".join(sentences))
    return docs


def train_tokenizer(texts: list[str], vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1], pad_token=SPECIALS[2])


def pack(tokenizer, docs: list[str], seq_len: int):
    """bos + doc + eos, concatenated and cut into full rows (the tail is dropped)."""
    import numpy as np

    ids: list[int] = []
    for doc in docs:
        ids += [tokenizer.bos_token_id, *tokenizer(doc)["input_ids"], tokenizer.eos_token_id]
    n = len(ids) // seq_len
    return np.asarray(ids[: n * seq_len], dtype=np.uint16).reshape(n, seq_len)


def make_model_phase_dir(root: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig

    root.mkdir(parents=True, exist_ok=True)
    train_docs, val_docs = made_up_documents(400, seed), made_up_documents(40, seed + 1)
    tokenizer = train_tokenizer(train_docs)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    artifact.write(root, tokenizer, config.to_dict(), pack(tokenizer, train_docs, SEQ_LEN), pack(tokenizer, val_docs, SEQ_LEN))
    return root


@pytest.fixture(scope="session")
def model_phase_dir(tmp_path_factory) -> Path:
    return make_model_phase_dir(tmp_path_factory.mktemp("model_phase"))


@pytest.fixture(scope="session")
def model_ref(model_phase_dir):
    from phases.refs import PhaseRef

    return PhaseRef(phase="model", key="toy", uri=str(model_phase_dir), fingerprint="toy-model")
