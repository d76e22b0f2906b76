"""PII redaction: e-mail addresses, IP addresses, phone numbers and secrets become placeholders.

Plain Python, applied per document inside the Spark batch function. Patterns lean to
precision: a redaction that eats a version number or a hash in code corrupts training text,
so IP candidates must parse as addresses (private/loopback ones are kept: they identify no
one), and generic secrets need a key-like name next to a long high-entropy value.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter

PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "secret": "<SECRET>"}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")
# Groups as phone numbers are written, ending in 4 digits ("555-123-4567", "(030) 123 4567",
# "+44 20 7946 0958"); not part of a longer dotted number such as a netmask or version.
_PHONE = re.compile(r"(?<![\w+.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{4}(?!\w|\.\d)")
_KNOWN_SECRETS = re.compile(
    r"AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub tokens
    r"|xox[abpors]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|sk-[A-Za-z0-9]{32,}"  # OpenAI-style keys
    r"|-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWT
)
_ASSIGNED_SECRET = re.compile(r"(?i)((?:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key)[\"']?\s*[:=]\s*[\"'])([A-Za-z0-9_\-+/=]{16,})([\"'])")


def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def _public_ip(candidate: str) -> bool:
    # "2.7.2.2" is a version far more often than an address: dotted quads need two
    # multi-digit octets to count.
    if "." in candidate and sum(len(o) > 1 for o in candidate.split(".")) < 2:
        return False
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return not (ip.is_private or ip.is_loopback or ip.is_unspecified or ip.is_reserved or ip.is_multicast or ip.is_link_local)


def redact(text: str) -> tuple[str, dict[str, int]]:
    """The text with PII replaced by placeholders, and how many of each kind were replaced."""
    counts = {k: 0 for k in PLACEHOLDERS}

    def sub(kind: str, pattern: re.Pattern, s: str, keep=lambda m: True) -> str:
        def repl(m: re.Match) -> str:
            if not keep(m):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return pattern.sub(repl, s)

    text = sub("secret", _KNOWN_SECRETS, text)

    def assigned(m: re.Match) -> str:
        if _entropy(m.group(2)) < 3.0:  # "password = 'xxxxxxxxxxxxxxxx'" placeholders stay
            return m.group(0)
        counts["secret"] += 1
        return m.group(1) + PLACEHOLDERS["secret"] + m.group(3)

    text = _ASSIGNED_SECRET.sub(assigned, text)
    text = sub("email", _EMAIL, text)
    text = sub("ip", _IPV4, text, lambda m: _public_ip(m.group(0)))
    text = sub("ip", _IPV6, text, lambda m: _public_ip(m.group(0)))
    text = sub("phone", _PHONE, text, lambda m: sum(ch.isdigit() for ch in m.group(0)) >= 9)
    return text, counts
