"""Instruction pairs from Python source: exact pairs on known code, determinism, caps."""

import ast
import inspect
import posixpath
import textwrap

from phases.align.recipes import derive_pairs, first_sentence, pairs_from_module, sample_pairs, signature_line

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


def test_pairs_from_known_source_are_exact():
    pairs = list(pairs_from_module(ast.parse(SOURCE)))
    assert pairs == [
        {"prompt": "def public(a, b=1, *args, key: str='x', **kw) -> int:\n", "completion": " Add things up."},
        {"prompt": "def open(self, force=False):\n", "completion": " Open the box across two lines!"},
        {"prompt": "async def fetch(url):\n", "completion": " Fetch it"},
    ]


def test_stdlib_posixpath_join_pair():
    pairs, stats = derive_pairs([{"id": "code/posixpath", "source": "code", "text": inspect.getsource(posixpath)}], 10_000, 0)
    assert {"prompt": "def join(a, *p):\n", "completion": " Join two or more pathname components, inserting '/' as needed."} in pairs
    assert not any(p["prompt"].startswith("def _") for p in pairs)
    assert stats.docs_parsed == 1 and stats.docs_failed == 0


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
    pairs, stats = derive_pairs(docs, 100, 0)
    assert len(pairs) == 3
    assert (stats.docs_seen, stats.docs_parsed, stats.docs_failed) == (3, 1, 2)
    assert stats.failures_by_kind == {"docs": 1, "licenses": 1}


def test_derivation_is_deterministic_and_capped():
    docs = [{"id": f"m{i}", "text": f"def f{i}(x):\n    '''Do thing {i}.'''\n"} for i in range(30)]
    full, _ = derive_pairs(docs, 1000, 0)
    assert [p["prompt"] for p in full[:3]] == ["def f0(x):\n", "def f1(x):\n", "def f10(x):\n"]  # id order
    a, stats = derive_pairs(list(reversed(docs)), 8, seed=1)
    b, _ = derive_pairs(docs, 8, seed=1)
    c, _ = derive_pairs(docs, 8, seed=2)
    assert a == b and len(a) == 8 and stats.pairs_unique == 30 and stats.pairs_kept == 8
    assert a != c
    assert all(p in full for p in a)
    assert sorted(a, key=full.index) == a  # the sample keeps corpus order


def test_duplicate_functions_are_kept_once():
    docs = [{"id": "x", "text": SOURCE}, {"id": "y", "text": SOURCE}]
    pairs, stats = derive_pairs(docs, 100, 0)
    assert len(pairs) == 3 and stats.functions_documented == 6


def test_sample_pairs_below_cap_is_identity():
    pairs = [{"prompt": str(i), "completion": "c"} for i in range(5)]
    assert sample_pairs(pairs, 8, 0) == pairs
