"""Toy upstream outputs for phase tests: the same layouts as the real phases, at toy scale.

Plain functions (no pytest): each folder's conftest wraps them in session fixtures.
- :func:`make_data_dir`: the data phase's ``train/`` and ``validation/`` Parquet splits,
  real Python standard-library source plus prose and a licence.
- :func:`make_model_dir`: what pretrain publishes: a tiny random Llama + byte-level BPE
  tokenizer (bos/eos/pad) saved with ``save_pretrained``.
- :func:`make_packed_dir`: what the model phase publishes for perplexity: ``val.bin``,
  ``packed.json`` and ``tokenizer/``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from phases.model import artifact  # noqa: E402
from phases.refs import PhaseRef  # noqa: E402

SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>")
MAX_POSITIONS = 256
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "<|assistant|>\n{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}\n"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
PROSE = [
    "# Installation\n\nInstall the package with pip. The command line tool reads a configuration "
    "file from the current directory and writes its results next to it. Run it with --help to see "
    "every option, and read the changelog before upgrading between major versions of the library.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software "
    "and associated documentation files, to deal in the Software without restriction, including "
    "without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense.",
    "## Usage\n\nCall the main function with a path. It returns a dictionary of settings, raising "
    "an error when the file is missing or malformed. Settings may be overridden on the command line "
    "with key=value pairs; the last one given wins, and unknown keys are reported with a hint.",
]


def _module_sources(names: list[str]) -> list[tuple[str, str]]:
    import importlib

    return [(n, inspect.getsource(importlib.import_module(n))) for n in names]


def data_rows() -> dict[str, list[dict[str, str]]]:
    """Rows per split: real stdlib code (known functions, e.g. posixpath.join) and prose."""
    train_code = _module_sources(["posixpath", "textwrap", "json.decoder"])
    val_code = _module_sources(["fnmatch", "shlex", "json.encoder", "string"])
    train = [{"id": f"code/{n}", "source": "code", "text": t} for n, t in train_code]
    train += [{"id": "docs/readme", "source": "docs", "text": PROSE[0]}, {"id": "licenses/mit", "source": "licenses", "text": PROSE[1]}]
    validation = [{"id": f"code/{n}", "source": "code", "text": t} for n, t in val_code]
    validation += [{"id": "docs/usage", "source": "docs", "text": PROSE[2]}]
    return {"train": train, "validation": validation}


def make_data_dir(root: Path, rows: dict[str, list[dict[str, str]]] | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    for split, split_rows in (rows or data_rows()).items():
        (root / split).mkdir(parents=True, exist_ok=True)
        # Two shards, as the data phase writes, so readers must glob rather than open one file.
        half = (len(split_rows) + 1) // 2
        for i, part in enumerate((split_rows[:half], split_rows[half:])):
            pq.write_table(
                pa.Table.from_pylist(part, schema=pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string())])),
                root / split / f"part-{i:05d}.parquet",
            )
    return root


def train_tokenizer(texts: list[str], vocab_size: int = 500):
    """A byte-level BPE like the model phase's, wrapped as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1], pad_token=SPECIALS[2])
    # Like the model phase's tokenizer: a chat template is set (the phases must not trip over it).
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = MAX_POSITIONS
    return fast


def make_model_dir(root: Path, data_dir: Path, seed: int = 0) -> Path:
    """A tiny random Llama and its tokenizer, saved as the pretrain phase publishes them."""
    import pyarrow.parquet as pq
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [r["text"] for f in sorted(Path(data_dir).glob("*/*.parquet")) for r in pq.read_table(f).to_pylist()]
    tokenizer = train_tokenizer(texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    root = Path(root)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def make_packed_dir(root: Path, model_dir: Path, data_dir: Path, seq_len: int = 64) -> Path:
    """``val.bin`` (uint16 rows of ``seq_len`` tokens), ``packed.json``, ``tokenizer/``."""
    import numpy as np
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids: list[int] = []
    for f in sorted((Path(data_dir) / "validation").glob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            # As the model phase packs: no bos, each document followed by eos.
            ids += tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // seq_len
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    val = np.asarray(ids[: n * seq_len]).reshape(n, seq_len)
    artifact.write(root, tokenizer, {"vocab_size": len(tokenizer), "max_position_embeddings": MAX_POSITIONS}, val[:1], val)
    return root


def ref(phase: str, path: Path) -> PhaseRef:
    return PhaseRef(phase=phase, key="toy", uri=str(Path(path).resolve()), fingerprint=f"toy-{phase}")


HELD_OUT_CHATS = [
    [{"role": "user", "content": "What does posixpath.join do?"}, {"role": "assistant", "content": "It joins path components with a slash."}],
    [{"role": "user", "content": "Write a function that adds two numbers."}, {"role": "assistant", "content": "def add(a, b):\n    return a + b"}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is a licence?"},
        {"role": "assistant", "content": "Terms for using software."},
    ],
    [{"role": "user", "content": "How do I install the package?"}, {"role": "assistant", "content": "Run pip install with its name."}],
    [
        {"role": "user", "content": "What does textwrap.dedent return?"},
        {"role": "assistant", "content": "The text with common leading whitespace removed."},
    ],
]


def make_align_dir(root: Path, data_dir: Path, reward_model: bool = True, seed: int = 0) -> Path:
    """What the align phase publishes: the model + tokenizer at the top, ``sft_eval.jsonl``, and
    (as for align.method grpo/rloo) a one-logit ``reward_model/`` (random here) with its tokenizer."""
    import json

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    root = make_model_dir(root, data_dir, seed=seed)
    with (root / "sft_eval.jsonl").open("w") as f:
        for messages in HELD_OUT_CHATS:
            f.write(json.dumps({"messages": messages}) + "\n")
    if reward_model:
        tokenizer = AutoTokenizer.from_pretrained(root)
        config = LlamaConfig.from_pretrained(root)
        config.num_labels = 1
        torch.manual_seed(seed + 1)
        LlamaForSequenceClassification(config).save_pretrained(root / "reward_model")
        tokenizer.save_pretrained(root / "reward_model")
    return root
