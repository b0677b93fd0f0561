"""Finding secrets: by key name, and in free text.

Key names: a key is secret when, lower-cased with ``-``, ``.`` and spaces read as ``_``, it is one of
the configured names (``CaptureConfig.secret_keys``), contains a fragment such as ``password``,
``secret``, ``api_key``, ``private_key``, ``access_key``, ``cookie`` or ``authoriz``, ends with
``_pwd``/``_auth``/``_key_id``, or ends with ``token`` (``tokens``, the usage counts, is not secret).

Free text (message content, error messages, every string of a payload): each rule below starts at
a literal marker found with ``str.find`` (C speed), then one anchored regex match decides, so a
string with no marker costs one ``lower()`` and a few searches. The rules hide:
``sk-...`` keys, ``Bearer``/``Basic``/``Token`` credentials, AWS access key ids (``AKIA``/``ASIA``),
GitHub (``ghp_`` ..., ``github_pat_``) and Slack (``xox?-``) tokens, PEM private keys, the password
of a URL's userinfo (``scheme://user:***@host``) and assignments such as ``password=...``,
``api_key: ...`` or ``"secret": "..."`` written inside text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"

_SECRET_FRAGMENTS = ("password", "passwd", "passphrase", "secret", "credential", "api_key", "apikey",
                     "private_key", "access_key", "cookie", "authoriz")
_SECRET_SUFFIXES = ("_pwd", "_auth", "_key_id")

DEFAULT_SECRET_KEYS = ("api_key", "apikey", "password", "passwd", "pwd", "passphrase", "token", "secret",
                       "authorization", "auth", "credential", "credentials", "cookie", "set_cookie",
                       "private_key", "access_key", "secret_key", "aws_secret_access_key", "session_token")


class SecretKeys:
    """Decides whether a mapping key names a secret (cached per key)."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(k.lower().replace("-", "_") for k in names)
        self._cache: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            norm = key.lower().replace("-", "_").replace(" ", "_").replace(".", "_")
            hit = (norm in self._names or norm.endswith(_SECRET_SUFFIXES)
                   or any(fragment in norm for fragment in _SECRET_FRAGMENTS)
                   or (norm.endswith("token") and len(norm) > 5))
            if len(self._cache) < 65_536:
                self._cache[key] = hit
        return hit


# -- free text ------------------------------------------------------------------------------------
_TOKEN_CHARS = r"[A-Za-z0-9\-._~+/]"
_ASSIGN = re.compile(r"""["']?\s*[=:]\s*["']?""")


class _Rule:
    """A marker (lower case), the regex matched where it is found, and how much of the match stays."""

    __slots__ = ("boundary", "marker", "regex")

    def __init__(self, marker: str, regex: str, boundary: bool = True, flags: int = 0) -> None:
        self.marker = marker
        self.regex = re.compile(regex, flags)
        self.boundary = boundary  # the marker must not continue a word


_RULES: tuple[_Rule, ...] = (
    _Rule("-----begin",
          r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?P<secret>.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z))",
          False, re.DOTALL),
    *(_Rule(word, rf"(?i:{word})\s+(?P<secret>{_TOKEN_CHARS}{{8,}}=*)") for word in ("bearer", "basic", "token")),
    _Rule("sk-", r"sk-(?P<secret>[A-Za-z0-9][A-Za-z0-9_\-]{15,})"),
    *(_Rule(word, rf"(?P<secret>{word.upper()}[0-9A-Z]{{16}})(?![0-9A-Za-z])") for word in ("akia", "asia")),
    *(_Rule(word, rf"{word}(?P<secret>[A-Za-z0-9_]{{20,}})") for word in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_",
                                                                           "github_pat_")),
    _Rule("xox", r"xox[abprs]-(?P<secret>[A-Za-z0-9\-]{10,})"),
    _Rule("://", r"://[^\s/@:\"']*:(?P<secret>[^\s/@\"']+)@", False),
    *(_Rule(word, rf"(?i:{re.escape(word)})" + r"""["']?\s*[=:]\s*["']?(?P<secret>[^\s,;&'"]+)""", False)
      for word in ("password", "passwd", "pwd", "passphrase", "secret", "api_key", "apikey", "api-key",
                   "access_key", "access-key", "access_token", "auth_token")),
    # "token: 512" is more likely a count than a secret: only longer values
    _Rule("token", r"""(?i:token)["']?\s*[=:]\s*["']?(?P<secret>[^\s,;&'"]{8,})""", False),
)
def secret_spans(value: str) -> list[tuple[int, int]]:
    """Where ``value`` holds secrets, as sorted, non-overlapping (start, end) spans."""
    if len(value) < 8:
        return []
    low = value.lower()
    if len(low) != len(value):  # a few non-ASCII letters change length when lowered: search case-sensitively
        low = value
    spans: list[tuple[int, int]] = []
    for rule in _RULES:
        start = low.find(rule.marker)
        while start != -1:
            if not (rule.boundary and start and (low[start - 1].isalnum() or low[start - 1] == "_")):
                match = rule.regex.match(value, start)
                if match is not None:
                    spans.append(match.span("secret"))
            start = low.find(rule.marker, start + 1)
    if len(spans) > 1:
        spans.sort()
        merged = [spans[0]]
        for begin, end in spans[1:]:
            if begin <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((begin, end))
        spans = merged
    return spans


def redact_text(value: str) -> str:
    """``value`` with the secrets it visibly holds replaced by ``***``."""
    spans = secret_spans(value)
    if not spans:
        return value
    out, last = [], 0
    for begin, end in spans:
        out.append(value[last:begin])
        out.append(REDACTED)
        last = end
    out.append(value[last:])
    return "".join(out)
