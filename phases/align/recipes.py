"""Instruction pairs derived from the corpus itself: signature -> first docstring sentence.

The corpus has no human-written instructions, but the Python sources in it document
themselves: every public function with a docstring gives a (prompt, completion) pair
``"def join(a, *p):\\n"`` -> ``" Join two or more pathname components, ..."``. Teaching the
model to answer a signature with its summary is a small, checkable supervised task.

Pure Python (``ast``, ``random``): no heavy library, so every step is unit-testable.
"""

from __future__ import annotations

import ast
import random
import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

# A sentence ends at . ! or ? followed by whitespace or the end of the paragraph.
# "e.g. foo" is cut early; acceptable for a summary, and far simpler than a sentence splitter.
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_MAX_COMPLETION_CHARS = 300  # longer "first sentences" are usually prose paragraphs, not summaries


@dataclass
class PairStats:
    """What the derivation saw: reported as params so an empty result can be explained."""

    docs_seen: int = 0
    docs_parsed: int = 0
    docs_failed: int = 0
    functions_seen: int = 0
    functions_documented: int = 0
    pairs_unique: int = 0
    pairs_kept: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def signature_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The one-line ``def`` header, rebuilt from the AST.

    Rebuilt rather than copied from the source so multi-line signatures and odd
    formatting all become one canonical line (``def join(a, *p):``).
    """
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}:"


def first_sentence(docstring: str) -> str:
    """First sentence of the docstring's first paragraph, whitespace collapsed ("" if none)."""
    paragraph = docstring.strip().split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    match = _SENTENCE_END.search(text)
    sentence = text[: match.end()] if match else text
    return sentence if len(sentence) <= _MAX_COMPLETION_CHARS else ""


def parse_python(text: str) -> ast.Module | None:
    """The module's AST, or None when the text is not Python (markdown, licences...)."""
    with warnings.catch_warnings():
        # Old stdlib files contain invalid escape sequences: a warning, not a failure.
        warnings.simplefilter("ignore")
        try:
            return ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            # ValueError: null bytes; RecursionError: pathological nesting.
            return None


def pairs_from_module(tree: ast.Module, stats: PairStats | None = None) -> Iterator[dict[str, str]]:
    """One pair per public, documented function or method, in source order."""
    stats = stats if stats is not None else PairStats()
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    # ast.walk is breadth-first; sort by position so pairs follow the file.
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset)):
        stats.functions_seen += 1
        if node.name.startswith("_"):  # private helpers and dunders: not a public contract
            continue
        doc = ast.get_docstring(node, clean=True)
        summary = first_sentence(doc) if doc else ""
        if not summary:
            continue
        stats.functions_documented += 1
        # The leading space makes the completion a separate token run after the newline,
        # so the tokenized prompt stays a prefix of prompt+completion.
        yield {"prompt": signature_line(node) + "\n", "completion": " " + summary}


def derive_pairs(docs: Iterable[dict[str, Any]], num_pairs: int, seed: int) -> tuple[list[dict[str, str]], PairStats]:
    """Pairs from every document that parses as Python; at most ``num_pairs``, seeded.

    ``docs`` are rows with ``id`` and ``text``. Documents are visited in id order and
    duplicate pairs (the same function in two files) are kept once, so the result depends
    only on the corpus content, the cap and the seed.
    """
    stats = PairStats()
    pairs: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for doc in sorted(docs, key=lambda d: str(d["id"])):
        stats.docs_seen += 1
        tree = parse_python(doc["text"])
        if tree is None:
            stats.docs_failed += 1
            kind = str(doc.get("source", "unknown"))
            stats.failures_by_kind[kind] = stats.failures_by_kind.get(kind, 0) + 1
            continue
        stats.docs_parsed += 1
        for pair in pairs_from_module(tree, stats):
            key = (pair["prompt"], pair["completion"])
            if key not in seen:
                seen.add(key)
                pairs.append(pair)
    stats.pairs_unique = len(pairs)
    pairs = sample_pairs(pairs, num_pairs, seed)
    stats.pairs_kept = len(pairs)
    return pairs, stats


def sample_pairs(pairs: list[dict[str, str]], num_pairs: int, seed: int) -> list[dict[str, str]]:
    """At most ``num_pairs`` pairs, a seeded sample kept in corpus order (stable diffs of pairs.jsonl)."""
    if len(pairs) <= num_pairs:
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), num_pairs))
    return [pairs[i] for i in keep]
