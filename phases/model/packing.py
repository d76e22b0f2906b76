"""Tokenize documents and pack them into fixed-length sequences in a memory-mapped array.

Documents are concatenated, each followed by EOS, and cut into rows of ``seq_len`` tokens;
the tail shorter than one row is dropped and counted. Alongside the tokens, ``docs``
records where every document starts in the token stream, so a packed row maps back to the
documents (and sources) it contains: row r covers tokens [r*seq_len, (r+1)*seq_len).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phases.model.artifact import token_dtype

log = logging.getLogger("lifecycle.model")


@dataclass
class PackStats:
    documents: int = 0
    doc_tokens: int = 0
    separators: int = 0
    sequences: int = 0
    dropped_tail_tokens: int = 0
    words: int = 0
    bytes: int = 0
    by_source: dict = None  # source -> {"documents", "tokens", "words", "bytes"}

    def __post_init__(self):
        self.by_source = self.by_source or {}

    def add(self, source: str, tokens: int, words: int, nbytes: int) -> None:
        self.documents += 1
        self.doc_tokens += tokens
        self.separators += 1
        self.words += words
        self.bytes += nbytes
        s = self.by_source.setdefault(source, {"documents": 0, "tokens": 0, "words": 0, "bytes": 0})
        s["documents"] += 1
        s["tokens"] += tokens
        s["words"] += words
        s["bytes"] += nbytes


def pack_split(split_dir: Path, tokenizer, seq_len: int, out_bin: Path, out_docs: Path, batch_rows: int = 256) -> PackStats:
    """Tokenize ``split_dir``'s Parquet into ``out_bin`` (rows of seq_len) and a document index."""
    dtype = token_dtype(len(tokenizer))
    eos = tokenizer.eos_token_id
    stats = PackStats()
    ids_col, src_col, start_col, len_col = [], [], [], []
    carry = np.empty(0, dtype=dtype)
    position = 0
    with open(out_bin, "wb") as fh:
        for f in sorted(Path(split_dir).glob("*.parquet")):
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=["id", "source", "text"]):
                texts = batch.column("text").to_pylist()
                # The Rust tokenizer encodes a batch on all cores.
                encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
                pieces = []
                for doc_id, source, text, ids in zip(batch.column("id").to_pylist(), batch.column("source").to_pylist(), texts, encoded):
                    ids_col.append(doc_id)
                    src_col.append(source)
                    start_col.append(position)
                    len_col.append(len(ids) + 1)
                    pieces.append(np.asarray(ids + [eos], dtype=dtype))
                    position += len(ids) + 1
                    stats.add(source, len(ids), len(text.split()), len(text.encode("utf-8")))
                stream = np.concatenate([carry, *pieces])
                full = len(stream) // seq_len * seq_len
                stream[:full].tofile(fh)
                stats.sequences += full // seq_len
                carry = stream[full:]
            log.info("model: packed %s (%d sequences so far)", f.name, stats.sequences)
    stats.dropped_tail_tokens = int(len(carry))
    table = pa.table({"id": ids_col, "source": src_col, "start": pa.array(start_col, pa.int64()), "length": pa.array(len_col, pa.int64())})
    pq.write_table(table, out_docs)
    return stats


def load_packed(path: Path, dtype: str, seq_len: int) -> np.ndarray:
    """The packed rows as a read-only memory map of shape (n, seq_len)."""
    return np.memmap(path, dtype=np.dtype(dtype), mode="r").reshape(-1, seq_len)


def documents_in_row(docs: pa.Table, row: int, seq_len: int) -> list[str]:
    """Ids of the documents whose tokens fall in packed row ``row`` (token-to-document lineage)."""
    starts = docs.column("start").to_numpy()
    ends = starts + docs.column("length").to_numpy()
    lo, hi = row * seq_len, (row + 1) * seq_len
    first = int(np.searchsorted(ends, lo, side="right"))
    last = int(np.searchsorted(starts, hi, side="left"))
    return docs.column("id").to_pylist()[first:last]
