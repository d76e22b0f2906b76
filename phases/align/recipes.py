"""Alignment data derived from the corpus itself: the documented default recipe.

The corpus has no human-written instructions, but the Python sources in it document
themselves. The recipe (used when ``align.sft_data`` / ``align.preference_data`` are unset):

1. every public, documented function or method of every train document that parses as
   Python gives a :class:`FunctionDoc`: its qualified name ``module.Class.func`` (the module
   named after the document id, :func:`module_name`) and the first sentence of its docstring;
   the same (name, summary) in two files is kept once; documents are visited in id order;
2. at most ``align.num_pairs`` of them, a seeded sample kept in corpus order (:func:`sample_pairs`);
3. instruction (:func:`instruction_rows`): user "What does `posixpath.join` do?" ->
   assistant "Join two or more pathname components, inserting '/' as needed.";
4. preference (:func:`preference_rows`): the same prompt, the right summary chosen, the
   summary of another function (a seeded draw among those with a different summary) rejected;
5. split (:func:`is_held_out`): a function is held out when sha1 of its qualified name falls
   in the first ``align.eval_fraction`` of the hash space, so the split does not move when the
   sample or the seed changes, and no held-out function is seen in training by any stage.

Pure Python (``ast``, ``random``, ``hashlib``): no heavy library, so every step is unit-testable.
"""

from __future__ import annotations

import ast
import hashlib
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
    """What the derivation saw: reported as params so an empty result can be explained.
    (``pairs_*`` count functions: one instruction and one preference row each.)"""

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


def sample_pairs(pairs: list, num_pairs: int, seed: int) -> list:
    """At most ``num_pairs`` items, a seeded sample kept in corpus order (stable diffs of the row files)."""
    if len(pairs) <= num_pairs:
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), num_pairs))
    return [pairs[i] for i in keep]


@dataclass(frozen=True)
class FunctionDoc:
    qualname: str
    signature: str
    summary: str


def module_name(doc_id: str) -> str:
    """The module a document id names: the path after ``.../python3.X/`` or after its first component.

    ``/usr/lib/python3.11/json/decoder.py`` -> ``json.decoder``; ``code/posixpath`` -> ``posixpath``.
    """
    path = str(doc_id).split("#", 1)[0].replace("\\", "/").removesuffix(".py")
    m = re.search(r"python3\.\d+/(.+)$", path)
    rel = m.group(1) if m else (path.split("/", 1)[1] if "/" in path.strip("/") else path)
    parts = [p for p in rel.split("/") if p and p != "__init__"]
    return ".".join(parts) or "module"


def functions_from_module(tree: ast.Module, module: str, stats: PairStats | None = None) -> Iterator[FunctionDoc]:
    """Public documented functions and methods with their qualified names, in source order."""
    stats = stats if stats is not None else PairStats()
    found: list[tuple[int, int, FunctionDoc]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                stats.functions_seen += 1
                doc = ast.get_docstring(child, clean=True)
                summary = first_sentence(doc) if doc and not child.name.startswith("_") else ""
                if summary:
                    stats.functions_documented += 1
                    found.append((child.lineno, child.col_offset, FunctionDoc(f"{prefix}{child.name}", signature_line(child), summary)))

    visit(tree, f"{module}.")
    for _, _, fn in sorted(found, key=lambda t: (t[0], t[1])):
        yield fn


def derive_functions(docs: Iterable[dict[str, Any]], num_pairs: int, seed: int) -> tuple[list[FunctionDoc], PairStats]:
    """Documented functions of the documents that parse as Python: at most ``num_pairs``, seeded.

    Parsing is the cost (ast.parse of ~17 MB of stdlib takes ~11 s on one core), so documents
    are visited in a seeded hash order and the visit stops once ``2 * num_pairs`` distinct
    functions are found; the sample is then drawn from those, in corpus (id, source) order.
    The result depends only on the corpus content, the cap and the seed.
    """
    stats = PairStats()
    found: dict[tuple[str, str], tuple[str, int, FunctionDoc]] = {}
    order = sorted(docs, key=lambda d: hashlib.sha1(f"{seed}:{d['id']}".encode()).digest())
    for doc in order:
        if len(found) >= 2 * num_pairs:
            break
        stats.docs_seen += 1
        tree = parse_python(doc["text"])
        if tree is None:
            stats.docs_failed += 1
            kind = str(doc.get("source", "unknown"))
            stats.failures_by_kind[kind] = stats.failures_by_kind.get(kind, 0) + 1
            continue
        stats.docs_parsed += 1
        for i, fn in enumerate(functions_from_module(tree, module_name(doc["id"]), stats)):
            key = (fn.qualname, fn.summary)
            if key not in found or str(doc["id"]) < found[key][0]:  # the same copy whichever is visited first
                found[key] = (str(doc["id"]), i, fn)
    fns = [fn for _, _, fn in sorted(found.values(), key=lambda t: (t[0], t[1]))]
    stats.pairs_unique = len(fns)
    fns = sample_pairs(fns, num_pairs, seed)
    stats.pairs_kept = len(fns)
    return fns, stats


def question(fn: FunctionDoc) -> str:
    return f"What does `{fn.qualname}` do?"


def is_held_out(key: str, eval_fraction: float) -> bool:
    """A stable split by the hash of the key (the function's qualified name)."""
    bucket = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return bucket < eval_fraction


def instruction_rows(fns: list[FunctionDoc]) -> list[dict[str, Any]]:
    """Chat rows in TRL's conversational format (``messages``), keyed by the qualified name."""
    return [{"id": fn.qualname, "messages": [{"role": "user", "content": question(fn)}, {"role": "assistant", "content": fn.summary}]} for fn in fns]


def preference_rows(fns: list[FunctionDoc], seed: int) -> list[dict[str, Any]]:
    """Conversational preference rows: the right summary chosen, another function's rejected."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for fn in fns:
        others = [other for other in fns if other.summary != fn.summary]
        if not others:
            continue
        other = rng.choice(others)
        rows.append(
            {
                "id": fn.qualname,
                "prompt": [{"role": "user", "content": question(fn)}],
                "chosen": [{"role": "assistant", "content": fn.summary}],
                "rejected": [{"role": "assistant", "content": other.summary}],
            }
        )
    return rows
