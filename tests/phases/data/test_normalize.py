from phases.data.build import mixture_targets
from phases.data.normalize import check, decode, metadata_description, normalize, text_hash


def test_normalize_canonicalizes():
    assert normalize("Cafe\u0301 \r\nline2\t \n\n\n\nend\x07") == "Café\nline2\n\nend"
    assert text_hash(normalize("a  \r\nb")) == text_hash(normalize("a\nb"))


def test_decode_flags_invalid_utf8():
    assert decode("é".encode()) == ("é", False)
    text, bad = decode(b"caf\xe9")
    assert bad and "\ufffd" in text
    assert decode(None) == (None, False)


def test_check_reasons():
    ok = "x" * 60
    assert check(ok, ok, 50, 1000) is None
    assert check(None, "", 50, 1000) == ("quarantine", "missing_text")
    assert check("a\x00b" * 30, "ab", 50, 1000) == ("quarantine", "binary")
    assert check("y" * 2000, "y" * 2000, 50, 1000) == ("quarantine", "too_long")
    assert check("short", "short", 50, 1000) == ("filter", "too_short")
    assert check("   ", "", 50, 1000) == ("filter", "empty")


def test_metadata_description_takes_the_body():
    raw = "Metadata-Version: 2.1\nName: demo\nSummary: x\n\n# Demo\n\nThe long description.\n"
    assert metadata_description(raw).strip() == "# Demo\n\nThe long description."


def test_mixture_matches_weights_without_repeats():
    assert mixture_targets({"a": 100, "b": 100}, {"a": 1, "b": 1}) == {"a": 100, "b": 100}
    # b is scarce for its weight: it keeps everything, a is down-sampled to a 1:3 ratio.
    t = mixture_targets({"a": 1000, "b": 30}, {"a": 1, "b": 3})
    assert t == {"a": 10, "b": 30}


def test_mixture_up_samples_within_the_epoch_cap():
    # Allowed 4 passes over b, a keeps 4x more and the 1:3 ratio still holds.
    assert mixture_targets({"a": 1000, "b": 30}, {"a": 1, "b": 3}, max_epochs=4) == {"a": 40, "b": 120}
    # Never more than the sources hold together, even with a generous cap.
    t = mixture_targets({"a": 100, "b": 100}, {"a": 1, "b": 1}, max_epochs=10)
    assert t == {"a": 100, "b": 100}
