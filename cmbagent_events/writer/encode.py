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

One API, a column at a time (:meth:`Sanitizer.encode_column`, :meth:`Sanitizer.text_column`): the
usual column is checked as a whole in C, and only the values the checks flag take the exact path.
"""

from __future__ import annotations

import base64
import json
from bisect import bisect_right
from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import accumulate, count, repeat
from operator import add
from typing import Any

import msgspec
from ahocorasick_rs import BytesAhoCorasick, Implementation

from ..redaction import REDACTED, TEXT_MARKERS, SecretKeys, key_words, redact_text, secret_spans
from .fit import Described, NeedsUserCode, Unreadable, clean_text

MAX_DEPTH = 32
MAX_ITEMS = 10_000  # elements kept per container; the rest are summarised by a marker

MAX_INT_BITS = 14_000  # ~4,200 digits: bigger ints cannot be written as text (sys.get_int_max_str_digits)
MAX_JSON_STRING = 1 << 20  # strings holding JSON are parsed (to redact inside them) up to this size
_PAIR_NAME_KEYS = ("name", "key", "header")  # {"name": "Authorization", "value": "..."} pairs

_encode = msgspec.json.Encoder().encode


def _refuse(value: Any) -> Any:
    raise TypeError  # not a JSON type: the slow path decides (repr, model_dump, ...)


_fast_encode = msgspec.json.Encoder(enc_hook=_refuse).encode

# The prefilter: a column's JSON texts are searched at once, with one Aho-Corasick automaton
# (``ahocorasick-rs``, a DFA in Rust), for the words redaction.py's rules start from (key_words, the
# free-text markers) and the NUL escape; a value holding none of them is kept as msgspec encoded it.
# The search runs over a folded copy: ASCII letters lower-cased, "-" and "." read as "_" (key words
# are also searched with spaces for "_"), "tokens" before a quote (the usage counts) blanked.
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FOLD = bytes.maketrans(_LETTERS + b"-.", _LETTERS.lower() + b"__")
_NUL_ESCAPE = b"\\u0000"  # what msgspec writes for NUL: a value holding it takes the exact path
_STR_OR_NONE = frozenset((str, type(None)))


def _fold(data: bytes) -> bytes:
    return data.translate(_FOLD).replace(b'tokens"', b'tok\x00ns"')


def _offsets(lengths: Iterable[int]) -> list[int]:
    """Where each chunk starts in ``sep.join(chunks)`` (one-character separator), and the end."""
    return list(map(add, accumulate(lengths, initial=0), count()))


def _spellings(word: bytes) -> list[bytes]:
    """``word`` with each "_" also written as a space (a key name reads spaces as "_")."""
    first, *rest = word.split(b"_")
    out = [first]
    for part in rest:
        out = [spelled + sep + part for spelled in out for sep in (b"_", b" ")]
    return out


class Prefilter:
    """Which chunks of a batch hold any of ``words`` (lower case) once folded, or any spelling of
    ``keys`` (key words: spaces read as "_"): a superset of the chunks in which the rules those words
    come from could find anything. ``extra``: more literals, already folded."""

    def __init__(self, words: Iterable[str], keys: Iterable[str] = (), extra: tuple[bytes, ...] = ()) -> None:
        key_spellings = {spelled for key in keys for spelled in _spellings(_fold(key.encode()))}
        folded = {_fold(word.encode()) for word in words} | key_spellings
        # a word holding another is found through it (fewer hits to attribute)
        minimal = sorted(w for w in folded if not any(other != w and other in w for other in folded))
        self.words = (*minimal, *extra)
        # the words a hit of which may be a secret key (each is part of a key word)
        self.key_hits = frozenset(k for k, w in enumerate(minimal) if any(w in key for key in key_spellings))
        self._automaton: BytesAhoCorasick | None = None  # built on first use (not at import)

    def _search(self, data: bytes, overlapping: bool = False) -> list[tuple[int, int, int]]:
        if self._automaton is None:
            self._automaton = BytesAhoCorasick(self.words, implementation=Implementation.DFA)
        return self._automaton.find_matches_as_indexes(data, overlapping)

    def flagged(self, chunks: list[bytes]) -> set[int]:
        """Indices of ``chunks`` holding a word: one fold and one automaton pass over the whole batch."""
        matches = self._search(_fold(b"\n".join(chunks)))  # msgspec escapes newlines, and no word holds one
        if not matches:
            return set()  # the usual batch: nothing to attribute
        starts = _offsets(map(len, chunks))
        # not overlapping: a word hidden by an overlapping hit is in the same chunk, already flagged
        return {bisect_right(starts, at) - 1 for _, at, _ in matches}

    def found(self, data: bytes) -> set[int]:
        """Indices (in ``words``) of the words ``data`` holds, overlapping ones included."""
        return {index for index, _, _ in self._search(_fold(data), overlapping=True)}

    def holds(self, data: bytes) -> bool:
        """Whether ``data`` holds a word."""
        return bool(self._search(_fold(data)))


TEXT_PREFILTER = Prefilter(TEXT_MARKERS)  # where secret_spans could find anything


@lru_cache(maxsize=16)
def json_prefilter(secret_keys: frozenset[str]) -> Prefilter:
    """The JSON prefilter for the normalized secret key names ``secret_keys`` (built once per set):
    key words and free-text markers, and the NUL escape."""
    return Prefilter(TEXT_MARKERS, key_words(secret_keys), (_NUL_ESCAPE,))


def flagged_text(strings: list[str]) -> set[int]:
    """Indices of ``strings`` holding a marker of a free-text shape (searched in their UTF-8)."""
    if "\n".join(strings).isascii():
        return TEXT_PREFILTER.flagged([s.encode("ascii") for s in strings])
    return TEXT_PREFILTER.flagged([s.encode("utf-8", "surrogatepass") for s in strings])


def redact_cut(value: str, limit: int) -> str:
    """Free-text secrets hidden, cut to ``limit`` chars (a marker names the original length), made
    storable. Only the kept part and ``MARGIN`` more characters are scanned: linear and bounded."""
    if len(value) <= limit:
        return clean_text(redact_text(value))
    return clean_text(f"{redact_text(value, limit)}...[truncated, {len(value)} chars in all]")


class Failed:
    """A column's value that could not be encoded, and why: ``error`` is :class:`NeedsUserCode` when
    only the caller's own code (``__repr__``, ``model_dump``) can describe it and user code was off."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Sanitizer:
    """Makes values storable, a column at a time; one per writer (it caches the secret-key decision
    per key). Not shared across threads: the writer's worker thread makes its own."""

    def __init__(self, secret_keys: Iterable[str], max_depth: int = MAX_DEPTH) -> None:
        self.is_secret_key = SecretKeys(secret_keys)  # (key) -> True for api_key, Authorization, Cookie, ...
        self.prefilter = json_prefilter(self.is_secret_key.names)
        self._max_depth = max_depth
        self._user_code = False  # per column call: False raises NeedsUserCode instead of calling __repr__
        self.failures = 0  # Failed values returned so far: a column that added none holds none

    def encode_column(self, values: list[Any] | tuple[Any, ...], limit: int,
                      exact: Callable[[Any], Any] | None = None, *, user_code: bool = False) -> list[Any]:
        """Each value as bounded, redacted JSON text (None stays None: SQL NULL); a value that could
        not be encoded is a :class:`Failed`.

        The usual column costs a few C calls: every value encoded by msgspec in one ``map``, one
        secret scan over the whole column (:class:`Prefilter`), one length and one bracket count per
        value. A value msgspec refuses, or that the scan flags, or longer than ``limit`` (cut before
        it is scanned), or nested deeper than ``MAX_DEPTH`` takes the exact path (``_clean``), given
        ``exact(value)`` when set (the plain value of one msgspec encodes alike: a Struct's dict)."""
        self._user_code = user_code
        refused: set[int] = set()
        try:
            chunks = list(map(_fast_encode, values))
        except Exception:  # a value msgspec refuses (not a JSON type): the others stay on the fast path
            chunks = []
            for k, value in enumerate(values):
                try:
                    chunks.append(_fast_encode(value))
                except Exception:
                    chunks.append(b"")
                    refused.add(k)
        if not chunks:
            return []
        if max(map(len, chunks)) > limit:
            long = {k for k, data in enumerate(chunks) if len(data) > limit}
            redo = self.prefilter.flagged([b"" if k in long else data for k, data in enumerate(chunks)]) | long
        else:
            redo = self.prefilter.flagged(chunks)
        redo |= refused
        depth = self._max_depth
        brackets = list(map(add, map(bytes.count, chunks, repeat(b"[")), map(bytes.count, chunks, repeat(b"{"))))
        if max(brackets) > depth:  # fewer brackets than the limit: cannot be too deep
            redo.update(k for k, n in enumerate(brackets) if n > depth)
        out: list[Any] = list(map(bytes.decode, chunks))
        if b"null" in chunks:  # None is SQL NULL (a NaN, also "null" here, stays JSON null)
            for k, value in enumerate(values):
                if value is None:
                    out[k] = None
        for k in redo:
            out[k] = self._encode_exact(values[k] if exact is None else exact(values[k]), limit)
        return out

    def encode_value(self, value: Any, limit: int, raw: bytes | None = None) -> Any:
        """One value as :meth:`encode_column` encodes it (user code off); ``raw``: its msgspec JSON
        when the caller has made it already (a model call's message, kept by its digest), so that
        the usual value costs one secret scan and one bracket count."""
        if raw is None or value is None:
            return self.encode_column([value], limit)[0]
        self._user_code = False
        if len(raw) > limit or self.prefilter.holds(raw) or raw.count(b"[") + raw.count(b"{") > self._max_depth:
            return self._encode_exact(value, limit)
        return raw.decode()

    def text_column(self, values: list[Any] | tuple[Any, ...], limit: int, *, user_code: bool = False) -> list[Any]:
        """Each value as bounded, NUL-free, redacted text for a plain text column (message content,
        error messages; None stays None); a value that could not be made text is a :class:`Failed`.
        A column of short ASCII strings with no free-text secret marker (the usual one) is checked as
        a whole and returned as it is; otherwise its short strings get one secret scan together."""
        self._user_code = user_code
        if set(map(type, values)) <= _STR_OR_NONE:
            strings = list(filter(None, values))
            if not strings:
                return list(values)
            if max(map(len, strings)) <= limit:
                joined = "\n".join(strings)
                if joined.isascii() and "\x00" not in joined and not TEXT_PREFILTER.holds(joined.encode("ascii")):
                    return list(values)
        out: list[Any] = [None] * len(values)
        strings, where = [], []
        for i, value in enumerate(values):
            if type(value) is str and len(value) <= limit:
                strings.append(value)
                where.append(i)
            elif value is not None:  # (a string to cut: cut before it is scanned)
                out[i] = self._text_exact(value, limit)
        hits = flagged_text(strings) if strings else set()
        for j, (i, value) in enumerate(zip(where, strings)):
            # no marker of a free-text shape: redact_text would return it unchanged
            out[i] = self._text_exact(value, limit) if j in hits else clean_str(value, limit)
        return out

    def plain(self, value: Any, limit: int) -> Any:
        """``value`` as plain JSON-ready data (dicts, lists, str, numbers), bounded and redacted as it
        is stored, with its own code allowed (``model_dump``, ``__repr__``): how a value that cannot
        leave its process travels to the writer process (handoff.py)."""
        self._user_code = True
        return self._clean_guarded(value, limit, 0, set())

    def _encode_exact(self, value: Any, limit: int) -> Any:
        try:
            return _encode(self._clean_guarded(value, limit, 0, set())).decode()
        except (Exception, NeedsUserCode) as exc:
            self.failures += 1
            return Failed(exc)

    def _text_exact(self, value: Any, limit: int) -> Any:
        try:
            return self._text(value, limit)
        except (Exception, NeedsUserCode) as exc:
            self.failures += 1
            return Failed(exc)

    def _text(self, value: Any, limit: int) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return redact_cut(value if type(value) is str else str.__getitem__(value, slice(None)), limit)
        if isinstance(value, (dict, list, tuple)):
            return clean_str(_encode(self._clean_guarded(value, limit, 0, set())).decode(), limit)
        if type(value) is Unreadable:
            return clean_str(value.marker(), limit)
        if not self._user_code:
            raise NeedsUserCode
        if type(value) is Described:
            return self._text(value.value, limit)
        return redact_cut(_safe_repr(value), limit)

    def _maybe_secret(self, data: bytes) -> bool:
        """Whether ``data`` (JSON text) may hold a secret: a key word sends it down the exact path;
        a free-text marker alone is common ("://", "sk-" in "task-") and is confirmed on the text first."""
        found = self.prefilter.found(data)
        if not found:
            return False
        if not self.prefilter.key_hits.isdisjoint(found):
            return True
        return bool(secret_spans(data.decode("utf-8", "replace")))

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
                and self._maybe_secret(value.encode("utf-8", "replace"))):
            try:
                parsed = json.loads(value)
            except ValueError:
                pass
            else:
                if isinstance(parsed, (dict, list)):
                    return clean_str(_encode(self._clean_guarded(parsed, limit, depth + 1, set())).decode(), limit)
        return redact_cut(value, limit)

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
                key = clean_str(k if type(k) is str else self._text(k, 256) or "None", 256)
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
        if kind is Unreadable:  # given up on in the process that captured it: a marker saying why
            return clean_str(value.marker(), limit)
        if not self._user_code:  # repr / model_dump are the caller's code: not on the writer's loop
            raise NeedsUserCode
        if kind is Described:  # described in the process that captured it (handoff.py)
            return self._clean(value.value, limit, depth, path)
        model_dump = getattr(value, "model_dump", None)  # pydantic models, e.g. AG2 events
        if callable(model_dump):
            try:
                return self._clean(model_dump(), limit, depth + 1, path)
            except Exception:
                pass
        return redact_cut(_safe_repr(value), limit)


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
