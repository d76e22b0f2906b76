"""Byte-level BPE tokenizer trained by streaming the prepared Parquet (bounded memory)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

log = logging.getLogger("lifecycle.model")

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
# A plain role-tagged template: the alignment phase formats chats with it. The assistant's
# content and its end-of-turn token sit inside TRL's {% generation %} markers, so
# SFTTrainer(assistant_only_loss=True) trains exactly those tokens (the model learns to stop).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "<|assistant|>\n{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}\n"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def iter_texts(split_dir: Path, max_bytes: int | None = None, batch_rows: int = 256) -> Iterator[list[str]]:
    """Batches of document texts from a split's Parquet files, in file order, up to ``max_bytes``."""
    seen = 0
    for f in sorted(Path(split_dir).glob("*.parquet")):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=["text"]):
            texts = batch.column("text").to_pylist()
            if max_bytes is not None:
                keep = []
                for t in texts:
                    if seen >= max_bytes:
                        break
                    keep.append(t)
                    seen += len(t.encode("utf-8"))
                texts = keep
            if texts:
                yield texts
            if max_bytes is not None and seen >= max_bytes:
                return


def train_tokenizer(split_dir: Path, vocab_size: int, min_frequency: int, max_bytes: int, extra_special: tuple[str, ...] = ()):
    """Train a byte-level BPE; returns a transformers fast tokenizer with bos/eos/pad and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # No prefix space and a byte-level decoder: decode(encode(x)) == x for any text.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS) + list(extra_special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t for batch in iter_texts(split_dir, max_bytes) for t in batch), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, additional_special_tokens=list(extra_special))
    fast.chat_template = CHAT_TEMPLATE
    log.info("model: trained a byte-level BPE of %d tokens", len(fast))
    return fast


def load_tokenizer(path: str):
    """A saved tokenizer given by the user; it must define EOS (packing separates documents with it)."""
    from transformers import AutoTokenizer

    from phases.errors import ConfigError

    if not Path(path).exists():
        raise ConfigError(f"model.tokenizer_path={path!r} does not exist; give a directory saved with save_pretrained()")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.eos_token_id is None:
        raise ConfigError(f"model.tokenizer_path={path!r}: the tokenizer has no eos_token; set one before using it")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        tok.chat_template = CHAT_TEMPLATE
    return tok
