"""PII redaction: e-mail addresses, IP addresses, phone numbers and secrets become placeholders.

Plain Python, applied per document inside the Spark batch function (``mapInPandas``), so each
rule is one compiled regex plus, where a pattern alone cannot tell, a cheap check of the match
and its immediate context. Patterns start with a literal or a small character class, and "not
inside a word" is checked in Python (:func:`_scan`): a leading look-behind makes ``re`` try every
position of the text, several times slower. Recall and precision are measured on planted values
and on ordinary text that looks like PII (tests/phases/data/test_pii_recall.py), which also
lists the known limits. Rules, in the order they run:

- secrets first (their text would otherwise be half-eaten by the e-mail or phone rules):
  private-key blocks, tokens with a known shape (AWS key ids, GitHub, OpenAI/Anthropic/Stripe,
  Slack, Google, Hugging Face, JWT), the password of a ``scheme://user:password@host`` URL, and
  a value assigned to a key-like name (``aws_secret_access_key = ...``, ``"password": "..."``)
  when it looks random (long, letters and digits, high entropy; not a call or attribute);
- e-mail addresses;
- IP addresses of every range (a private or loopback address still maps a network), except the
  unspecified address and netmasks; a dotted quad after a version word (``firmware 2.10.15.3``,
  ``version = "1.2.3.4"``, ``>=1.2.3.4``, section numbers) is a version, not an address;
- phone numbers: ``+`` and a country code with 8-15 digits, a bracketed area code, the North
  American 3-3-4 shape, or a national number with a trunk 0 (``020 7946 0958``, ``030/1234567``,
  ``01 23 45 67 89``); years, dates, ISBNs, decimals and number lists have none of these shapes.
"""

from __future__ import annotations

import binascii
import ipaddress
import math
import re
from collections import Counter
from typing import Callable, Iterator

PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "secret": "<SECRET>"}
SECRET = PLACEHOLDERS["secret"]

# --------------------------------------------------------------------------- secrets

_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----"
    r"(?:[\s\S]*?-----END \1PRIVATE KEY\2-----|(?:(?:\s|\\n)+[A-Za-z0-9+/=]{20,})*)"  # unterminated: the base64 lines that follow
)
_KNOWN_SECRETS = re.compile(
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS key ids
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub fine-grained tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|sk-[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic (sk-ant-...): judged by _random_looking
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWT
)
# scheme://user:password@host: the password goes, the user and host stay.
_URL_PASSWORD = re.compile(r"://([^\s:/@\"'<>]*):([^\s/@\"'<>]+)@")
# Words that name a secret, found with str.find (fast) before anything else is matched; the
# name must have one as a component ("aws_secret_access_key", "SecretAccessKey", "db_password",
# "GITHUB_TOKEN"; not "tokenizer" or "max_tokens"), or end in an api/access/auth/... key.
_KEY_HINTS = ("key", "secret", "token", "pass", "pwd", "credential")
_SECRET_WORDS = frozenset({"secret", "token", "password", "passwd", "pwd", "passphrase", "apikey", "credential", "credentials"})
_KEY_KINDS = frozenset({"api", "access", "auth", "private", "client", "signing", "master", "encryption", "license"})
_COMPONENTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_WORD_REST = re.compile(r"[\w-]*")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# What follows the key: "key": "value" / key = 'value' / key: value / KEY=value.
_ASSIGNMENT = re.compile(r"[\"']?\s*(?::=|=>|[:=])\s*(?:([\"'])([^\"'\s]{8,200})\1|([^\s\"'<>,;&)\]}]{8,}+))")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.\w+)+")
_AUTH_HEADER = re.compile(r"(?:Bearer|bearer|BEARER)(\s+)([A-Za-z0-9\-._~+/]{20,}=*)|(?:Basic|basic|BASIC)(\s+)([A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])")

# --------------------------------------------------------------------------- e-mail, IP, phone

_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\w)")
_IPV6 = re.compile(
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:(?:\d{1,3}\.){3}\d{1,3}(?![\w.])|[0-9A-Fa-f]{1,4}(?:%[A-Za-z0-9_]+)?(?![\w:]|\.\w)|(?![\w:]|\.\w))"
)
# What precedes a dotted quad that is a version or a section number, not an address.
_VERSION_BEFORE = re.compile(
    r"(?:^|[^a-z])(?:version|ver|v|release|rel|build|firmware|fw|rev|revision|patch|update|python|node|java|jdk|jre|ruby|perl|php|gcc|"
    r"clang|llvm|cuda|driver|bios|kernel|sdk|chapter|section|sec|table|fig|figure|step|clause|appendix|oid|edition|tag)s?[_-]*\.?\s*"
    r"(?::=|[:=])?\s*[\"'(\[]?\s*$"
    r"|(?:==|>=|<=|~=|!=|\^|~)\s*$"
)
# ... or follows it: "3.19.14.5 (build)", "1.2.3.4-rc1", a time zone ("12.34.56.78+0800").
_VERSION_AFTER = re.compile(
    r"\s*\(?(?:build|version|release)\b|[-+~](?:rc|alpha|beta|dev|pre|post|a|b|snapshot|final|ga|stable)\d*\b|[+-]\d{4}\b", re.IGNORECASE
)
_PREFIX = re.compile(r"/(\d{1,3})(?!\d)")
# A run of digit groups as phone numbers are written; the groups are judged in Python.
_PHONE = re.compile(
    r"(?:\+\d{1,3}(?:[ .\-]?\(0\))?|\(\+?\d{1,5}\)|\d{1,8})"
    r"(?:(?:[ .\-/]|(?<=\))|(?=\())[ ]?(?:\(\d{1,5}\)|\d{1,8})){1,7}(?![\w\-]|[.,/]\d)"
    r"|\+\d{8,15}(?!\w)"
)
_EXTENSION = re.compile(r"\s*(?:ext\.?|extension|x)\s*\d{1,6}\b", re.IGNORECASE)
_GROUP = re.compile(r"\+?\(?\+?\d+\)?")
_NOT_PHONE_BEFORE = re.compile(r"(?<![a-z])(?:isbn|issn|doi|arxiv|ean|gtin|lines?|version|ver)[\s:#.=-]*(?:1[03])?[\s:#.=-]*$", re.IGNORECASE)

Rule = Callable[[re.Match, str], "str | None"]


def _scan(pattern: re.Pattern, text: str, not_after: str | None = "") -> Iterator[re.Match]:
    """``pattern``'s matches that do not start inside a word (after a letter, digit, ``_`` or a
    character of ``not_after``; None: anywhere): the look-behind, checked here, not in the pattern."""
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        start = m.start()
        if not_after is not None and start and (text[start - 1].isalnum() or text[start - 1] == "_" or text[start - 1] in not_after):
            pos = start + 1  # as a look-behind would: try the next position
            continue
        yield m
        pos = max(m.end(), start + 1)


def _replace(pattern: re.Pattern, text: str, rule: Rule, not_after: str | None = "") -> str:
    """The text with each match replaced by ``rule(match, text)``; None keeps the match."""
    out, last = [], 0
    for m in _scan(pattern, text, not_after):
        if m.start() < last:
            continue
        new = rule(m, text)
        if new is not None:
            out += [text[last : m.start()], new]
            last = m.end()
    return "".join(out) + text[last:] if out else text


def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def _random_looking(value: str) -> bool:
    """A password or key, not a word, path, number or placeholder: letters and digits, high entropy."""
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value) and _entropy(value) >= 3.0


def _assigned_secrets(text: str, counts: dict[str, int]) -> str:
    """Values assigned to a key-like name (``aws_secret_access_key = ...``, ``"password": "..."``).

    Passwords may be short (8 characters); other keys need 12 quoted, 16 bare. A bare value that
    is a call, an index, an attribute chain, a URL or a template (``tokenizer.encode(x)``,
    ``os.environ["KEY"]``, ``${DB_PASSWORD}``) is code, not a secret; so is one that does not look
    random (``password = "xxxxxxxx"``, ``token: YOUR_TOKEN``).
    """
    low = text.lower()
    if len(low) != len(text):  # "İ".lower() is two characters: keep the offsets of text
        low = text.translate(_ASCII_LOWER)
    word_ends = set()
    for hint in _KEY_HINTS:
        i = low.find(hint)
        while i != -1:
            word_ends.add(_WORD_REST.match(text, i).end())
            i = low.find(hint, i + len(hint))
    edits = []
    for end in sorted(word_ends):
        start = end
        while start and (text[start - 1].isalnum() or text[start - 1] in "_-"):
            start -= 1
        m = _ASSIGNMENT.match(text, end)
        if m is None:
            continue
        parts = [c.lower() for c in _COMPONENTS.findall(text[start:end])]
        if not (_SECRET_WORDS.intersection(parts) or (len(parts) >= 2 and parts[-1] == "key" and parts[-2] in _KEY_KINDS)):
            continue
        key = low[start:end]
        quoted, bare = m.group(2), m.group(3)
        secret = quoted if quoted is not None else bare
        password = "pass" in key or "pwd" in key
        if len(secret) < (8 if password else 12 if quoted is not None else 16) or secret.startswith(("<", "0x")):
            continue
        if bare is not None and (
            any(c in secret for c in "([{") or secret.startswith(("$", "%")) or "://" in secret or _DOTTED_NAME.fullmatch(secret.rstrip("."))
        ):
            continue
        if _random_looking(secret):
            edits.append(m.span(2) if quoted is not None else m.span(3))
    if not edits:
        return text
    out, last = [], 0
    for a, b in edits:
        if a >= last:
            out += [text[last:a], SECRET]
            last = b
            counts["secret"] += 1
    return "".join(out) + text[last:]


def _basic_auth(value: str) -> bool:
    """``Authorization: Basic <base64 of user:password>``."""
    try:
        raw = binascii.a2b_base64(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return False
    return b":" in raw and all(32 <= c < 127 for c in raw)


def _network(ip, text: str, end: int) -> bool:
    """``100.64.0.0/10``, ``2001:db8::/32``: a range (host bits zero), which names no host."""
    prefix = _PREFIX.match(text, end)
    if prefix is None or int(prefix.group(1)) >= ip.max_prefixlen:
        return False
    try:
        ipaddress.ip_network(f"{ip}/{prefix.group(1)}", strict=True)
    except ValueError:
        return False
    return True


def _is_ip(m: re.Match, text: str) -> bool:
    candidate = m.group(0)
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if ip.is_unspecified:
        return False
    start = m.start()
    if ip.version == 4:
        if candidate.startswith(("0.", "255.")):  # netmasks ("255.255.255.0", wildcard "0.0.0.255"), "this network"
            return False
        line_start = text.rfind("\n", max(0, start - 40), start) + 1
        before = text[max(line_start, start - 40) : start].lower()
        if _VERSION_BEFORE.search(before) or _VERSION_AFTER.match(text, m.end()):
            return False
    else:
        # "ab::cd" (C++, Rust paths) has no digit; "x[1::2]" and "a[::3]" are slices.
        if not any(c.isdigit() for c in candidate):
            return False
        if "::" in candidate and start >= 2 and text[start - 1] == "[" and (text[start - 2].isalnum() or text[start - 2] in "_])"):
            return False
        groups = [g for g in candidate.split(":") if g]
        if not candidate.startswith("::") and len(groups) <= 2 and all(g.isdigit() and len(g) <= 2 for g in groups):
            return False  # "1::3", "10::20": slice bounds
    return not _network(ip, text, m.end())


def _phone_shape(groups: list[str], seps: list[str]) -> bool:
    digits = sum(c.isdigit() for g in groups for c in g)
    first = groups[0]
    if first.startswith("+"):
        return first[1] != "0" and 8 <= digits <= 15  # no country code starts with 0 ("+000000120")
    if first.startswith("("):
        return 9 <= digits <= 12 and len(groups) >= 2 and len(groups[-1]) >= 3
    if not all(g.isdigit() for g in groups) or any(len(s) > 1 for s in seps):
        return False  # written numbers have single separators ("01  012 0123" is a column layout)
    if first.startswith("00") and first[2:3] not in ("", "0") and len(first) <= 5:
        return 8 <= digits - 2 <= 15  # 0049 30 1234567: the international prefix written as 00
    lens = [len(g) for g in groups]
    kinds = set(seps)
    if len(kinds) == 1 and kinds <= {" ", "-", "."}:
        if lens == [3, 3, 4] and first[0] in "23456789":
            return True  # North American 415-555-0132
        if lens == [1, 3, 3, 4] and first == "1":
            return True  # 1-800-555-0199
    if first[0] != "0" or not 2 <= len(first) <= 5 or first[1] == "0" or not 9 <= digits <= 12 or len(groups) > 5:
        return False
    if min(lens) < 2 or not (len(kinds) == 1 or kinds <= {" ", "-"} or (kinds <= {" ", "/"} and "/" not in seps[1:])):
        return False  # a slash only after the area code: 030/1234567
    if max(lens) == 2 and len(groups) != 5:  # all pairs: the French 01 23 45 67 89
        return False
    if kinds == {"."} and len(groups) < 3:
        return False  # a decimal, "05.6789010"
    values = [int(g) for g in groups]
    if lens[:3] == [2, 2, 4] and (1 <= values[0] <= 31 and 1 <= values[1] <= 31):
        return False  # a date, "05/01/2024 10:30"
    return not all(b - a == 1 for a, b in zip(values, values[1:]))  # "01 02 03 04 05" counts, it does not ring


def _phone(m: re.Match, text: str) -> int | None:
    """Where the phone number that starts the run ``m`` ends (None: not a phone number)."""
    if _NOT_PHONE_BEFORE.search(text, max(0, m.start() - 12), m.start()):
        return None
    run = m.group(0)
    spans = [g.span() for g in _GROUP.finditer(run)]
    groups = [run[a:b] for a, b in spans]
    # Separators as written ("" between "(0)" and "20" counts as one space).
    seps = [run[spans[k][1] : spans[k + 1][0]] or " " for k in range(len(spans) - 1)]
    # The whole run, or (for +49 ... and (030) ... numbers) its longest valid start: a plain
    # shape inside a longer run is part of a list of numbers ("96 192 384 768 1536").
    full = len(groups)
    for j in range(full, 0, -1) if groups[0][0] in "+(" else (full,):
        if (j == 1 and not groups[0].startswith("+")) or (j < full and seps[j - 1] == "."):
            continue
        if _phone_shape(groups[:j], seps[: j - 1]):
            end = m.start() + spans[j - 1][1]
            ext = _EXTENSION.match(text, end) if j == full else None
            return ext.end() if ext else end
    return None


def _phones(text: str, counts: dict[str, int]) -> str:
    out, last = [], 0
    for m in _scan(_PHONE, text, "+.-/"):
        if m.start() < last:
            continue
        end = _phone(m, text)
        if end is not None:
            out += [text[last : m.start()], PLACEHOLDERS["phone"]]
            last = end
            counts["phone"] += 1
    return "".join(out) + text[last:] if out else text


def _emails(text: str, counts: dict[str, int]) -> str:
    """Found from their ``@``: the local part backwards, the domain forwards."""
    out, last, at = [], 0, text.find("@")
    while at != -1:
        start = at
        while start > last and at - start < 64 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if start < at and domain is not None and not (start and (text[start - 1].isalnum() or text[start - 1] == "_")):
            out += [text[last:start], PLACEHOLDERS["email"]]
            last = domain.end()
            counts["email"] += 1
        at = text.find("@", max(at + 1, last))
    return "".join(out) + text[last:] if out else text


def mask_url_credentials(text: str) -> str:
    """``text`` with the password of each ``scheme://user:password@host`` shown as ``***``: for
    URIs that are logged (a tracking URI, a source path), where the rest must stay readable."""
    return _URL_PASSWORD.sub(lambda m: f"://{m.group(1)}:***@", text) if "://" in text else text


def redact(text: str) -> tuple[str, dict[str, int]]:
    """The text with PII replaced by placeholders, and how many of each kind were replaced."""
    counts = {k: 0 for k in PLACEHOLDERS}

    def placeholder(kind: str, keep: Callable[[re.Match, str], bool] | None = None) -> Rule:
        def rule(m: re.Match, s: str) -> str | None:
            if keep is not None and not keep(m, s):
                return None
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return rule

    def url_password(m: re.Match, s: str) -> str:
        counts["secret"] += 1
        return f"://{m.group(1)}:{SECRET}@"

    def auth_header(m: re.Match, s: str) -> str | None:
        bearer = m.group(2) is not None
        value = m.group(2) if bearer else m.group(4)
        if not (_random_looking(value) if bearer else _basic_auth(value)):
            return None
        counts["secret"] += 1
        return m.group(0)[: m.start(2 if bearer else 4) - m.start()] + SECRET

    def known_secret(m: re.Match, s: str) -> str | None:
        v = m.group(0)
        if v.startswith("sk-") and (s[m.start() - 1 : m.start()] == "-" or not _random_looking(v[3:])):
            return None  # "task-..." is cut off by _scan; "sk-learn-like-words" is no key
        counts["secret"] += 1
        return SECRET

    if "PRIVATE KEY" in text:
        text = _replace(_PRIVATE_KEY, text, placeholder("secret"))
    text = _replace(_KNOWN_SECRETS, text, known_secret)
    if "://" in text:
        text = _replace(_URL_PASSWORD, text, url_password, None)
    text = _assigned_secrets(text, counts)
    if any(w in text for w in ("earer", "EARER", "asic", "ASIC")):
        text = _replace(_AUTH_HEADER, text, auth_header)
    if "@" in text:
        text = _emails(text, counts)
    if ":" in text:
        text = _replace(_IPV6, text, placeholder("ip", _is_ip), ":.%")
    text = _replace(_IPV4, text, placeholder("ip", _is_ip), ".")
    return _phones(text, counts), counts
