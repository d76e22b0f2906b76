"""The corpus recipe: exact rows on known code, qualified names, determinism, the hash split."""

import ast
import inspect
import posixpath
import textwrap

from phases.align.recipes import (
    FunctionDoc,
    derive_functions,
    first_sentence,
    functions_from_module,
    instruction_rows,
    is_held_out,
    module_name,
    preference_rows,
    sample_pairs,
    signature_line,
)

SOURCE = textwrap.dedent('''
    """Module docstring: not a function."""

    def public(a, b=1, *args, key: str = "x", **kw) -> int:
        """Add things up.  Then more detail follows here.

        Second paragraph.
        """

    def _private(x):
        """Hidden helper."""

    def undocumented(x):
        return x

    class Box:
        def __init__(self):
            """Dunder: private."""

        def open(self,
                 force=False):
            """Open the box
            across two lines!  Rest."""

    async def fetch(url):
        """Fetch it"""
''')


def test_functions_from_known_source_are_exact():
    fns = list(functions_from_module(ast.parse(SOURCE), "toy"))
    assert fns == [
        FunctionDoc("toy.public", "def public(a, b=1, *args, key: str='x', **kw) -> int:", "Add things up."),
        FunctionDoc("toy.Box.open", "def open(self, force=False):", "Open the box across two lines!"),
        FunctionDoc("toy.fetch", "async def fetch(url):", "Fetch it"),
    ]


def test_stdlib_posixpath_join_rows():
    fns, stats = derive_functions([{"id": "code/posixpath", "source": "code", "text": inspect.getsource(posixpath)}], 10_000, 0)
    join = next(f for f in fns if f.qualname == "posixpath.join")
    assert join.summary == "Join two or more pathname components, inserting '/' as needed."
    assert not any(f.qualname.split(".")[-1].startswith("_") for f in fns)
    assert stats.docs_parsed == 1 and stats.docs_failed == 0
    row = next(r for r in instruction_rows(fns) if r["id"] == "posixpath.join")
    assert row["messages"] == [{"role": "user", "content": "What does `posixpath.join` do?"}, {"role": "assistant", "content": join.summary}]


def test_module_names_from_document_ids():
    assert module_name("code/posixpath") == "posixpath"
    assert module_name("/usr/lib/python3.11/json/decoder.py") == "json.decoder"
    assert module_name("/usr/lib/python3.11/json/__init__.py#1") == "json"


def test_preference_rows_pair_the_right_summary_against_another():
    fns = [FunctionDoc(f"m.f{i}", f"def f{i}():", f"Do thing {i}.") for i in range(10)] + [FunctionDoc("m.g", "def g():", "Do thing 0.")]
    rows = preference_rows(fns, seed=0)
    assert len(rows) == len(fns)
    by_id = {r["id"]: r for r in rows}
    assert by_id["m.f3"]["prompt"] == [{"role": "user", "content": "What does `m.f3` do?"}]
    assert by_id["m.f3"]["chosen"] == [{"role": "assistant", "content": "Do thing 3."}]
    assert all(r["chosen"] != r["rejected"] for r in rows)  # a function with the same summary is never the rejected one
    assert preference_rows(fns, seed=0) == rows and preference_rows(fns, seed=1) != rows


def test_split_by_name_hash_is_stable_and_proportionate():
    names = [f"pkg.mod.f{i}" for i in range(2000)]
    held = [n for n in names if is_held_out(n, 0.2)]
    assert 0.17 < len(held) / len(names) < 0.23
    assert held == [n for n in names if is_held_out(n, 0.2)]
    assert set(held) <= {n for n in names if is_held_out(n, 0.5)}  # a larger fraction only adds rows


def test_signature_line_rebuilds_one_line():
    node = ast.parse("def f(a,\n      b: int = 2,\n      /, c=None):\n    pass").body[0]
    assert signature_line(node) == "def f(a, b: int=2, /, c=None):"


def test_first_sentence():
    assert first_sentence("Return x. More.") == "Return x."
    assert first_sentence("  Split   the\n  string  ") == "Split the string"
    assert first_sentence("Version 1.2 is parsed. Done.") == "Version 1.2 is parsed."
    assert first_sentence("First para\n\nSecond para.") == "First para"
    assert first_sentence("x" * 400) == ""  # a wall of text is no summary


def test_non_python_docs_are_counted_as_failures():
    docs = [
        {"id": "b", "source": "docs", "text": "# Title\n\nSome *markdown* prose: not code."},
        {"id": "a", "source": "code", "text": SOURCE},
        {"id": "c", "source": "licenses", "text": "Permission is hereby granted, free of charge"},
    ]
    fns, stats = derive_functions(docs, 100, 0)
    assert len(fns) == 3
    assert (stats.docs_seen, stats.docs_parsed, stats.docs_failed) == (3, 1, 2)
    assert stats.failures_by_kind == {"docs": 1, "licenses": 1}


def test_derivation_is_deterministic_and_capped():
    docs = [{"id": f"code/m{i}", "text": f"def f{i}(x):\n    '''Do thing {i}.'''\n"} for i in range(30)]
    full, _ = derive_functions(docs, 1000, 0)
    assert [f.qualname for f in full[:3]] == ["m0.f0", "m1.f1", "m10.f10"]  # id order
    a, stats = derive_functions(list(reversed(docs)), 8, seed=1)
    b, _ = derive_functions(docs, 8, seed=1)
    c, _ = derive_functions(docs, 8, seed=2)
    assert a == b and len(a) == 8 and stats.pairs_kept == 8
    assert stats.pairs_unique == 16 and stats.docs_seen == 16  # the visit stops at 2 x num_pairs functions
    assert a != c and all(f in full for f in a)
    assert sorted(a, key=full.index) == a  # the sample keeps corpus order


def test_duplicate_functions_are_kept_once():
    fns, stats = derive_functions([{"id": "code/x", "text": SOURCE}, {"id": "code/x#1", "text": SOURCE}], 100, 0)
    assert len(fns) == 3 and stats.functions_documented == 6


def test_sample_pairs_below_cap_is_identity():
    items = list(range(5))
    assert sample_pairs(items, 8, 0) == items
