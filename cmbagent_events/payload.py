"""Turning arbitrary captured values into safe, bounded JSON (writer side only).

Rules (CONTRACT.md, "Payloads"):
- strings longer than the limit are cut, with a marker that records the original length;
- values that are not JSON types are stored as their ``repr`` (itself bounded);
- keys that name secrets (api_key, password, token, ...) have their values replaced by ``"***"``;
- NUL bytes and unencodable surrogates are replaced, so PostgreSQL and UTF-8 encoders accept them;
- bytes are stored base64-encoded;
- recursion and very deep nesting end in a marker instead of a crash.
"""

from __future__ import annotations

from collections.abc import Iterable
import base64
from typing import Any

import msgspec

REDACTED = "***"
MAX_DEPTH = 32
MAX_ITEMS = 10_000  # elements kept per container; the rest are summarised by a marker

_SECRET_SUFFIXES = ("_api_key", "_apikey", "_password", "_secret", "_token", "_secret_key", "_private_key")

_encode = msgspec.json.Encoder().encode


def _refuse(value: Any) -> Any:
    raise TypeError  # not a JSON type: the slow path decides (repr, model_dump, ...)


_fast_encode = msgspec.json.Encoder(enc_hook=_refuse).encode
# Lower-case fragments of secret key names ("...key" as a JSON key, password, token, ...); usage
# counts ("tokens", "prompt_tokens") are removed before looking. A hit only sends the value down the
# exact (slow) path, which checks each key properly; plain substring tests are ~3x faster than a
# case-insensitive regex on message-sized payloads.
def _maybe_secret(data: bytes) -> bool:
    low = data.lower()
    return (b'key"' in low or b"passw" in low or b"secret" in low or b"authoriz" in low or b"credential" in low
            or (b"token" in low and b"token" in low.replace(b'tokens"', b"")))


class Sanitizer:
    """Makes values storable; one per writer (it caches the secret-key decision per key)."""

    def __init__(self, secret_keys: Iterable[str], max_depth: int = MAX_DEPTH) -> None:
        self._secret_names = frozenset(k.lower() for k in secret_keys)
        self._key_cache: dict[str, bool] = {}
        self._max_depth = max_depth

    def is_secret_key(self, key: str) -> bool:
        """True for keys like ``api_key``, ``OPENAI_API_KEY``, ``Authorization``, ``access_token``."""
        hit = self._key_cache.get(key)
        if hit is None:
            norm = key.lower().replace("-", "_")
            hit = norm in self._secret_names or norm.endswith(_SECRET_SUFFIXES)
            if len(self._key_cache) < 65_536:
                self._key_cache[key] = hit
        return hit

    def clean(self, value: Any, limit: int) -> Any:
        """A JSON-safe copy of ``value`` following the module rules."""
        return self._clean(value, limit, 0, set())

    def text(self, value: Any, limit: int) -> str | None:
        """A bounded, NUL-free string for plain text columns (message content, error messages)."""
        if value is None:
            return None
        if isinstance(value, str):
            return clean_str(value, limit)
        if isinstance(value, (dict, list, tuple)):
            return clean_str(_encode(self.clean(value, limit)).decode(), limit)
        return clean_str(_safe_repr(value), limit)

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
        return _encode(self._clean(value, limit, 0, set())).decode()

    def _clean(self, value: Any, limit: int, depth: int, path: set[int]) -> Any:
        if value is None or value is True or value is False:
            return value
        kind = type(value)
        if kind is str:
            return clean_str(value, limit)
        if kind is int:  # JSON numbers are unbounded; msgspec (the fast path) writes big ints exactly too
            return value
        if kind is float:
            return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
        if depth >= self._max_depth:
            return f"<max depth {self._max_depth} reached>"
        if isinstance(value, dict):
            ident = id(value)
            if ident in path:
                return "<recursion>"
            path.add(ident)
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if i >= MAX_ITEMS:
                    out["<truncated>"] = f"{len(value) - MAX_ITEMS} more items"
                    break
                key = clean_str(k if isinstance(k, str) else _safe_repr(k), 256)
                out[key] = REDACTED if (v is not None and self.is_secret_key(key)) else self._clean(v, limit, depth + 1, path)
            path.discard(ident)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            ident = id(value)
            if ident in path:
                return "<recursion>"
            path.add(ident)
            items = []
            for i, v in enumerate(value):
                if i >= MAX_ITEMS:
                    items.append(f"<{len(value) - MAX_ITEMS} more items>")
                    break
                items.append(self._clean(v, limit, depth + 1, path))
            path.discard(ident)
            return items
        if isinstance(value, (bytes, bytearray, memoryview)):  # base64, as the fast path (msgspec) does
            return clean_str(base64.b64encode(bytes(value)).decode("ascii"), limit)
        # subclasses of the JSON scalars (str/int enums, numpy float64) are stored as their base value
        if isinstance(value, str):
            return clean_str(str(value), limit)
        if isinstance(value, int):
            return self._clean(int(value), limit, depth, path)
        if isinstance(value, float):
            return self._clean(float(value), limit, depth, path)
        model_dump = getattr(value, "model_dump", None)  # pydantic models, e.g. AG2 events
        if callable(model_dump):
            try:
                return self._clean(model_dump(), limit, depth + 1, path)
            except Exception:
                pass
        return clean_str(_safe_repr(value), limit)


def clean_str(value: str, limit: int) -> str:
    """Cut to ``limit`` chars with a marker naming the original length; strip NUL and surrogates."""
    if len(value) > limit:
        value = f"{value[:limit]}...[truncated, {len(value)} chars in all]"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    return value


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the event
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
