"""Turning arbitrary captured values into safe, bounded JSON (writer side only).

Rules (docs/architecture.md, "Payloads"):
- strings longer than the limit are cut, with a marker that records the original length;
- values that are not JSON types are stored as their ``repr`` (itself bounded);
- keys that name secrets (api_key, password, token, cookie, ...; see redaction.py) have their values
  replaced by ``"***"``, also in key/value pairs (``[["Authorization", "Bearer ..."]]``,
  ``{"name": "Cookie", "value": ...}``) and inside strings holding JSON (AG2's tool-call arguments);
- secrets visible in free text (``sk-...``, ``Bearer ...``, PEM keys, URL passwords, ...) are hidden
  in every string, message content and error message included;
- ints too big to write as text (over ~4,200 digits) are stored as a marker naming their size;
- a value that cannot be read (a container mutated by another thread while it is read, a subclass
  whose methods raise) becomes a marker naming the reason instead of failing its row;
- NUL bytes and unencodable surrogates are replaced, so PostgreSQL and UTF-8 encoders accept them;
- bytes are stored base64-encoded;
- recursion and very deep nesting end in a marker instead of a crash.
"""

from __future__ import annotations

import base64
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from itertools import accumulate, count, repeat
from operator import add
from typing import Any

import msgspec

from ..redaction import _RULES, REDACTED, SecretKeys, redact_text, secret_spans
from .fit import NeedsUserCode as NeedsUserCode
from .fit import clean_text

MAX_DEPTH = 32
MAX_ITEMS = 10_000  # elements kept per container; the rest are summarised by a marker

MAX_INT_BITS = 14_000  # ~4,200 digits: bigger ints cannot be written as text (sys.get_int_max_str_digits)
MAX_JSON_STRING = 1 << 20  # strings holding JSON are parsed (to redact inside them) up to this size
_PAIR_NAME_KEYS = ("name", "key", "header")  # {"name": "Authorization", "value": "..."} pairs

_encode = msgspec.json.Encoder().encode


def _refuse(value: Any) -> Any:
    raise TypeError  # not a JSON type: the slow path decides (repr, model_dump, ...)


_fast_encode = msgspec.json.Encoder(enc_hook=_refuse).encode
# Lower-case fragments of secret key names ("...key" as a JSON key, password, token, ...); usage
# counts ("tokens", "prompt_tokens") are removed before looking. A hit only sends the value down the
# exact (slow) path, which checks each key properly; plain substring tests are ~3x faster than a
# case-insensitive regex on message-sized payloads.
# One pass over the lower-cased JSON (~2x faster than a scan per fragment): fragments of secret key
# names, then the markers of the free-text rules (redaction.py). A key fragment sends the value down
# the exact path; a free-text marker alone is common ("://", "sk-" in "task-") and is confirmed on
# the JSON text first. "tokens" (usage counts) is not a fragment.
_KEY_FRAGMENTS = frozenset((b'key"', b"passw", b"passphrase", b"secret", b"auth", b"credential", b"cookie", b"pwd",
                            b"key_id", b"token"))
HINT_WORDS = (*sorted(_KEY_FRAGMENTS), b"acces", b"api", b"gh", b"github", b"akia", b"asia", b"bearer", b"basic",
              b"sk-", b"xox", b"://", b"-----begin")
# HINT_WORDS as one alternation written as a trie (first letters, then their endings; "token" not
# before 's"'): `re` tries every branch at every position, so the trie scans 1.1-2.2x faster than
# the flat list, with the same matches (tests/test_redaction.py compares them). Across a whole batch
# (_flagged_json) each branch searches on its own instead: a branch starts with a literal, which `re`
# skips to directly, so the eleven scans together take about half the trie's one.
_HINT_BRANCHES_SOURCE = (rb'a(?:uth|pi|kia|sia|cces)', rb'b(?:earer|asic)', rb'c(?:redential|ookie)', rb'g(?:h|ithub)',
                         rb'key(?:"|_id)', rb'p(?:ass(?:w|phrase)|wd)', rb's(?:ecret|k-)', rb'token(?!s")', rb'xox',
                         rb'://', rb'-----begin')
_HINT = re.compile(b"|".join(_HINT_BRANCHES_SOURCE))
_HINT_BRANCHES = tuple(map(re.compile, _HINT_BRANCHES_SOURCE))
# what the batch scan looks for: each hint branch, and the NUL escape that encode() also sends down the exact path
_BATCH_SCANS = (*_HINT_BRANCHES, re.compile(re.escape(b"\\u0000")))


def _maybe_secret(data: bytes) -> bool:
    low = data.lower()
    markers_only = False
    for match in _HINT.finditer(low):
        if match.group() in _KEY_FRAGMENTS:
            return True
        markers_only = True
    return markers_only and bool(secret_spans(data.decode("utf-8", "replace")))


_TEXT_MARKERS = tuple(dict.fromkeys(rule.marker for rule in _RULES))  # what secret_spans looks for
_STR_OR_NONE = frozenset((str, type(None)))
FAILED = object()  # encode_batch / text_batch: this value raised; encode it alone to see why


def _offsets(chunks: list[Any]) -> list[int]:
    """Where each chunk starts in ``sep.join(chunks)`` (one-character separator), and the end."""
    return list(map(add, accumulate(map(len, chunks), initial=0), count()))


def _flagged_json(chunks: list[bytes]) -> set[int]:
    """Indices of encoded values that ``_maybe_secret`` or the NUL check could send down the exact
    path: one ``lower()`` and one search per hint branch and for the NUL escape over the whole batch
    instead of per value. A value not flagged holds no hint, so the per-value checks would pass it too."""
    low = b"\n".join(chunks).lower()  # msgspec escapes newlines: no match spans two values
    hit: set[int] = set()
    starts: list[int] | None = None
    for pattern in _BATCH_SCANS:
        match = pattern.search(low)
        if match is None:
            continue  # the usual scan: one pass, nothing to attribute
        if starts is None:
            starts = _offsets(chunks)
        while match is not None:
            index = bisect_right(starts, match.start()) - 1
            hit.add(index)
            match = pattern.search(low, starts[index + 1])  # the rest of this value is decided
    return hit


def _flagged(chunks: list[Any], markers: tuple[Any, ...], sep: Any) -> set[int]:
    """Indices of ``chunks`` (all bytes or all str) holding any of ``markers`` once lower-cased:
    one ``lower()`` and one search per marker over the whole batch, instead of per value. A chunk
    not flagged holds no marker, so the per-value checks would find nothing in it either.
    (``"tokens"`` followed by a quote, the usage counts, is no marker, as in ``_maybe_secret``.)"""
    joined = sep.join(chunks)
    low = joined.lower()
    if len(low) != len(joined):  # lower() changed some lengths: offsets would not map back
        return set(range(len(chunks)))
    starts = _offsets(chunks)
    token, quote = "token", 's"'
    hit: set[int] = set()
    for marker in markers:
        at = low.find(marker)
        while at != -1:
            index = bisect_right(starts, at) - 1
            if marker == token and low.startswith(quote, at + 5):
                at = low.find(marker, at + 1)
                continue
            hit.add(index)
            at = low.find(marker, starts[index + 1])  # the rest of this chunk is decided
    return hit


class Sanitizer:
    """Makes values storable; one per writer (it caches the secret-key decision per key)."""

    def __init__(self, secret_keys: Iterable[str], max_depth: int = MAX_DEPTH) -> None:
        self.is_secret_key = SecretKeys(secret_keys)  # (key) -> True for api_key, Authorization, Cookie, ...
        self._max_depth = max_depth
        self.user_code = True  # False: raise NeedsUserCode instead of calling __repr__ / model_dump

    def clean(self, value: Any, limit: int) -> Any:
        """A JSON-safe copy of ``value`` following the module rules."""
        return self._clean_guarded(value, limit, 0, set())

    def text(self, value: Any, limit: int) -> str | None:
        """A bounded, NUL-free string for plain text columns (message content, error messages)."""
        if value is None:
            return None
        if isinstance(value, str):
            return clean_str(redact_text(value if type(value) is str else str.__getitem__(value, slice(None))), limit)
        if isinstance(value, (dict, list, tuple)):
            return clean_str(_encode(self.clean(value, limit)).decode(), limit)
        if not self.user_code:
            raise NeedsUserCode
        return clean_str(redact_text(_safe_repr(value)), limit)

    def encode(self, value: Any, limit: int) -> str | None:
        """``clean`` then JSON-encode; None stays None (SQL NULL).

        Fast path: encode directly in C (msgspec) and keep the result when it provably needs no
        cleaning: short enough that no string can exceed ``limit``, no NUL, no key that could be
        a secret, too few brackets to nest deeper than the limit. Anything else (or anything
        msgspec refuses) takes the exact path.
        """
        if value is None:
            return None
        if type(value) is dict and not value:
            return "{}"
        try:
            data = _fast_encode(value)
        except Exception:
            pass
        else:
            if (len(data) <= limit and b"\\u0000" not in data and not _maybe_secret(data)
                    and data.count(b"[") + data.count(b"{") <= self._max_depth):  # fewer brackets: not too deep
                return data.decode()
        return _encode(self._clean_guarded(value, limit, 0, set())).decode()

    def encode_batch(self, values: list[Any], limits: list[int]) -> list[Any]:
        """``[encode(v, limit) ...]`` for a whole batch, with one secret scan for all of it (same
        results). A value whose encoding raised comes back as ``FAILED``."""
        out: list[Any] = [None] * len(values)
        chunks: list[bytes] = []
        where: list[int] = []
        for i, value in enumerate(values):
            if value is None:
                continue
            if type(value) is dict and not value:
                out[i] = "{}"
                continue
            try:
                chunks.append(_fast_encode(value))
                where.append(i)
            except Exception:
                out[i] = self._encode_or_failed(value, limits[i])
        flagged = _flagged_json(chunks) if chunks else set()
        depth = self._max_depth
        for j, (i, data) in enumerate(zip(where, chunks)):
            if (j in flagged or len(data) > limits[i]
                    or (len(data) > depth and data.count(b"[") + data.count(b"{") > depth)):
                out[i] = self._encode_or_failed(values[i], limits[i])  # the exact path
            else:
                out[i] = data.decode()
        return out

    def text_batch(self, values: list[Any], limits: list[int]) -> list[Any]:
        """``[text(v, limit) ...]`` for a whole batch, with one free-text secret scan for all of its
        plain strings (same results). A value whose conversion raised comes back as ``FAILED``."""
        out: list[Any] = [None] * len(values)
        strings: list[str] = []
        where: list[int] = []
        for i, value in enumerate(values):
            if type(value) is str:
                strings.append(value)
                where.append(i)
            elif value is not None:
                out[i] = self._text_or_failed(value, limits[i])
        flagged = _flagged(strings, _TEXT_MARKERS, "\n") if strings else set()
        for j, (i, value) in enumerate(zip(where, strings)):
            if j in flagged:
                out[i] = self._text_or_failed(value, limits[i])
            else:  # no marker of a free-text rule: redact_text would return it unchanged
                out[i] = clean_str(value, limits[i])
        return out

    def encode_column(self, values: list[Any] | tuple[Any, ...], limit: int,
                      exact: Callable[[Any], Any] | None = None) -> list[Any]:
        """``encode_batch(values, [limit] * n)`` for one column, the usual one done in C: every value
        encoded in one ``map``, one secret scan, one length and one bracket count per value; only the
        values flagged there take the exact path, given ``exact(value)`` when ``exact`` is set (the
        plain value of one that msgspec encodes alike, e.g. a Struct for a dict). ``FAILED`` marks a
        value whose encoding raised."""
        try:
            chunks = list(map(_fast_encode, values))
        except Exception:  # a value msgspec cannot encode alone: value by value
            plain = list(map(exact, values)) if exact is not None else list(values)
            return self.encode_batch(plain, [limit] * len(values))
        if not chunks:
            return []
        redo = _flagged_json(chunks)
        depth = self._max_depth
        if max(map(len, chunks)) > limit:
            redo.update(k for k, data in enumerate(chunks) if len(data) > limit)
        brackets = list(map(add, map(bytes.count, chunks, repeat(b"[")), map(bytes.count, chunks, repeat(b"{"))))
        if max(brackets) > depth:
            redo.update(k for k, n in enumerate(brackets) if n > depth)
        out: list[Any] = list(map(bytes.decode, chunks))
        if b"null" in chunks:  # None is SQL NULL (a NaN, also "null" here, stays JSON null as in encode)
            for k, value in enumerate(values):
                if value is None:
                    out[k] = None
        for k in redo:
            out[k] = self._encode_or_failed(values[k] if exact is None else exact(values[k]), limit)
        return out

    def text_column(self, values: list[Any] | tuple[Any, ...], limit: int) -> list[Any]:
        """``text_batch(values, [limit] * n)`` for one column; a column of plain strings (and None)
        with no free-text secret marker, no NUL, nothing to cut and nothing outside ASCII (the usual
        one) is checked as a whole and returned as it is."""
        if set(map(type, values)) <= _STR_OR_NONE:
            strings = list(filter(None, values))
            if not strings:
                return list(values)
            joined = "\n".join(strings)
            if (joined.isascii() and "\x00" not in joined and max(map(len, strings)) <= limit
                    and not _flagged(strings, _TEXT_MARKERS, "\n")):
                return list(values)
        return self.text_batch(list(values), [limit] * len(values))

    def _encode_or_failed(self, value: Any, limit: int) -> Any:
        try:
            return self.encode(value, limit)
        except (Exception, NeedsUserCode):  # the row's own call raises it again, where it is handled
            return FAILED

    def _text_or_failed(self, value: Any, limit: int) -> Any:
        try:
            return self.text(value, limit)
        except (Exception, NeedsUserCode):
            return FAILED

    def _clean_guarded(self, value: Any, limit: int, depth: int, path: set[int]) -> Any:
        """``_clean``, with a value that cannot be read replaced by a marker naming why."""
        try:
            return self._clean(value, limit, depth, path)
        except NeedsUserCode:
            raise
        except Exception as exc:
            return f"<unstorable {_type_name(value)}: {_type_name(exc)}>"

    def _clean_str(self, value: str, limit: int, depth: int) -> Any:
        """Free-text secrets hidden; a string holding a JSON object or array with secret keys is
        parsed, cleaned and written back as JSON text (AG2 passes tool-call arguments this way)."""
        head = value[:1]
        if (head in ("{", "[") and len(value) <= MAX_JSON_STRING
                and _maybe_secret(value.encode("utf-8", "replace"))):
            try:
                parsed = json.loads(value)
            except ValueError:
                pass
            else:
                if isinstance(parsed, (dict, list)):
                    return clean_str(_encode(self._clean_guarded(parsed, limit, depth + 1, set())).decode(), limit)
        return clean_str(redact_text(value), limit)

    def _clean(self, value: Any, limit: int, depth: int, path: set[int]) -> Any:
        if value is None or value is True or value is False:
            return value
        kind = type(value)
        if kind is str:
            return self._clean_str(value, limit, depth)
        if kind is int:  # JSON numbers are unbounded, but Python will not write ints of > 4,300 digits
            return value if value.bit_length() <= MAX_INT_BITS else f"<int of {value.bit_length()} bits>"
        if kind is float:
            return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
        if depth >= self._max_depth:
            return f"<max depth {self._max_depth} reached>"
        if isinstance(value, dict):
            ident = id(value)
            if ident in path:
                return "<recursion>"
            path.add(ident)
            items = _snapshot(dict.items, value)  # dict.items: a subclass's override is not called
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(items):
                if i >= MAX_ITEMS:
                    out["<truncated>"] = f"{len(items) - MAX_ITEMS} more items"
                    break
                key = clean_str(k if type(k) is str else self.text(k, 256) or "None", 256)
                out[key] = (REDACTED if (v is not None and self.is_secret_key(key))
                            else self._clean_guarded(v, limit, depth + 1, path))
            if "value" in out and out["value"] is not None:  # {"name": "Authorization", "value": ...}
                for name_key in _PAIR_NAME_KEYS:
                    name = out.get(name_key)
                    if isinstance(name, str) and self.is_secret_key(name):
                        out["value"] = REDACTED
                        break
            path.discard(ident)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            ident = id(value)
            if ident in path:
                return "<recursion>"
            path.add(ident)
            elements = _snapshot(tuple, value)
            cleaned = []
            for i, v in enumerate(elements):
                if i >= MAX_ITEMS:
                    cleaned.append(f"<{len(elements) - MAX_ITEMS} more items>")
                    break
                cleaned.append(self._clean_guarded(v, limit, depth + 1, path))
            # [["Authorization", "Bearer ..."]]: a (name, value) pair whose name is a secret key
            if (len(cleaned) == 2 and type(cleaned[0]) is str and cleaned[1] is not None
                    and self.is_secret_key(cleaned[0])):
                cleaned[1] = REDACTED
            path.discard(ident)
            return cleaned
        if isinstance(value, (bytes, bytearray, memoryview)):  # base64, as the fast path (msgspec) does
            return clean_str(base64.b64encode(bytes(value)).decode("ascii"), limit)
        # subclasses of the JSON scalars (str/int enums, numpy float64) are stored as their base value
        # (read through the base type's own methods: a subclass's __str__/__int__ may raise)
        if isinstance(value, str):
            return self._clean_str(str.__getitem__(value, slice(None)), limit, depth)
        if isinstance(value, int):
            return self._clean(int.__index__(value), limit, depth, path)
        if isinstance(value, float):
            return self._clean(float.__float__(value), limit, depth, path)
        if not self.user_code:  # repr / model_dump are the caller's code: not on the caller's loop
            raise NeedsUserCode
        model_dump = getattr(value, "model_dump", None)  # pydantic models, e.g. AG2 events
        if callable(model_dump):
            try:
                return self._clean(model_dump(), limit, depth + 1, path)
            except Exception:
                pass
        return clean_str(redact_text(_safe_repr(value)), limit)


def _snapshot(read: Any, container: Any) -> Any:
    """``read(container)`` (a copy made in C, atomic under the GIL for builtin containers); retried
    when another thread changed the container meanwhile."""
    for _ in range(3):
        try:
            return read(container)
        except RuntimeError:  # "changed size during iteration"
            continue
    return read(container)


def _type_name(value: Any) -> str:
    name: str = type.__getattribute__(type(value), "__name__")
    return name


def clean_str(value: str, limit: int) -> str:
    """Cut to ``limit`` chars with a marker naming the original length; strip NUL and surrogates."""
    if len(value) > limit:
        value = f"{value[:limit]}...[truncated, {len(value)} chars in all]"
    return clean_text(value)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the event
        return f"<unrepresentable {_type_name(value)}: {_type_name(exc)}>"
