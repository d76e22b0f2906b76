from phases.config import QualityConfig
from phases.data.pii import redact
from phases.data.quality import duplicate_line_fraction, duplicate_ngram_fraction, line_fractions, quality_reason, top_ngram_fraction

PROSE = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch. "
    "Later that evening the family gathers around the table to share stories about the harvest, "
    "the weather, and the neighbours who moved away last spring to live closer to the city. "
    "Nobody expected the old mill to reopen, yet by autumn its wheel was turning once more."
)


def test_good_prose_passes():
    assert quality_reason(PROSE, QualityConfig()) is None


def test_each_heuristic_names_itself():
    q = QualityConfig()
    assert quality_reason("too few words here", q) == "gopher_word_count"
    assert quality_reason(" ".join(["extraordinarilylongwordsonly"] * 60), q) == "gopher_mean_word_length"
    assert quality_reason(PROSE + " #tag" * 30, q) == "gopher_symbol_ratio"
    bullets = "\n".join(f"- item number {i} with some words in it" for i in range(20))
    assert quality_reason(bullets, q) == "gopher_bullet_lines"
    ellipses = "\n".join(f"and then the story went on and on for line {i}..." for i in range(20))
    assert quality_reason(ellipses, q) == "gopher_ellipsis_lines"
    repeated = "\n".join(["this same line is repeated over and over again"] * 10 + [PROSE])
    assert quality_reason(repeated, q) == "gopher_duplicate_lines"


def test_repetition_measures():
    assert duplicate_line_fraction("a\nb\na\n") == 2 / 3
    assert line_fractions("- x\ny...\nz") == (1 / 3, 1 / 3)
    ws = "a b a b a b".split()
    assert top_ngram_fraction(ws, 2) == 1.0
    assert duplicate_ngram_fraction("x y z w v x y z w v".split(), 5) == 1.0
    assert duplicate_ngram_fraction(PROSE.split(), 5) == 0.0


def test_pii_is_replaced_and_counted():
    text, counts = redact(
        "Write to jane.doe@example.org or call +1 415-555-0100. Server 93.184.216.34, key AKIAIOSFODNN7EXAMPLE, token = 'zX9q3LmP0aB7cD2eF5gH8jK1'"
    )
    assert counts == {"email": 1, "ip": 1, "phone": 1, "secret": 2}
    for leaked in ("jane.doe", "415-555", "93.184", "AKIA", "zX9q"):
        assert leaked not in text
    assert "<EMAIL>" in text and "<PHONE>" in text and "<IP_ADDRESS>" in text and "<SECRET>" in text


def test_pii_leaves_code_alone():
    code = 'version = "2.7.2.2"\nmask = "255.255.255.0"\nany = "0.0.0.0"\nnet = "10.0.0.0/8"\npassword = "xxxxxxxxxxxxxxxx"\n'
    assert redact(code) == (code, {"email": 0, "ip": 0, "phone": 0, "secret": 0})
    # Every address range is redacted: a private or loopback address still maps a network.
    assert redact('host = "127.0.0.1"\nnet = "10.1.2.3"\n')[1]["ip"] == 2
