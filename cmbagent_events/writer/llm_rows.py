"""Model calls stored whole: a captured :class:`~cmbagent_events.capture_values.LlmExchange` becomes
one ``llm_calls`` row and the ``llm_contents`` rows its run has not stored yet.

A group chat re-sends its whole history with every call, so each distinct message is stored once per
run (content-addressed: known by its hash, numbered by its ``ordinal``) and a request as the list of
its messages' ordinals (a few bytes each): the stored bytes grow with the run's distinct messages, not
with the square of its length. A message is stored as the
writer stores every value (secrets redacted, NUL-free JSON) within ``max_llm_message_size``; a
longer one is cut, marked, and makes its call not replayable (``note`` says why).

Work per call is mostly lookups: a message already seen in this run is recognised by the digest of
its raw JSON (msgspec, in C) before any redaction runs; only new messages are cleaned and hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import msgspec

from ..capture_values import LlmExchange, same_messages
from ..store.columns import LlmCallRow, LlmContentRow, make_row
from .encode import Failed
from .fit import Described, Unreadable

HASH_CHARS = 32  # hex characters of a content's BLAKE2b digest (128 bits)
RAW_MEMORY = 200_000  # raw digests remembered per run (then forgotten: only the cost of a re-clean)
CONVERSATIONS = 1_000  # conversations whose last request is remembered (then forgotten, as above)

_raw_json = msgspec.json.Encoder().encode


def stored_text(encode: Callable[..., Any], value: Any, limit: int, raw: bytes | None = None
                ) -> tuple[str, str | None]:
    """``value`` as an llm content is stored (replay compares a live request's messages the same way),
    and why it could not be, if so; ``raw``: its msgspec JSON when made already."""
    body = encode(value, limit) if raw is None else encode(value, limit, raw)
    if isinstance(body, str):
        return body, None
    # only the value's own code could describe it: a marker
    return json.dumps(f"<not storable: {type(value).__name__}>"), "not storable as JSON"


def content_hash(body: str) -> str:
    """The key of a stored content: its stored JSON's BLAKE2b digest (replay hashes a live request's
    messages the same way, after the same redaction and bounds)."""
    return hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=HASH_CHARS // 2).hexdigest()


class LlmRows:
    """Builds one run's llm rows (one instance per writer; not thread-safe: the writer's own)."""

    def __init__(self, run_id: str, encode: Callable[..., Any], max_message_size: int,
                 max_params_size: int) -> None:
        """``encode(value, limit, raw=None)``: the writer's JSON encoding (redaction, NUL escapes,
        strings cut at ``limit`` characters with a marker; ``raw``, the value's msgspec JSON when made
        already); anything but a str back means it could not."""
        self._run_id = run_id
        self._encode = encode
        self._max_message = max_message_size
        self._max_params = max_params_size
        # this run's contents handed to the writer: hash -> ordinal. A batch that is then lost (counted
        # as dropped) loses its contents with it: later calls referring to them read as "missing".
        self._ordinals: dict[str, int] = {}
        self._raw: dict[bytes, tuple[str, str | None]] = {}  # raw JSON digest -> (stored hash, problem)
        # id of the caller's message dict -> (our copy of it, its ordinal, problem): the usual message,
        # re-sent unchanged with every call of a chat, is known by one C-level dict comparison
        self._seen: dict[int, tuple[Any, int, str | None]] = {}
        self._by_text: dict[int, tuple[Any, int, str | None]] = {}  # the same, by its content string's id
        self._params: dict[bytes, Any] = {}  # a call's parameters (usually the same every call) as stored
        # a conversation's last request, by its first message's id: (origins, messages, refs, problems).
        # The next call of that conversation re-sends it and adds to it; the part re-sent unchanged is
        # known by one C-level list comparison, and only what was added is looked at message by message.
        self._conversations: dict[int, tuple[tuple[int, ...], list[Any], list[int], list[str | None]]] = {}

    def _message_refs(self, messages: list[Any], origins: list[int] | None,
                      contents: list[tuple[Any, ...]]) -> tuple[list[int], list[str | None]]:
        """The ordinals of a request's messages (new ones stored), and what stops each being served again."""
        refs: list[int] = []
        problems: list[str | None] = []
        start = 0
        key = None
        if origins is not None and len(origins) == len(messages) and messages:
            key = tuple(origins)
            known = self._conversations.get(key[0])
            if known is not None:
                k = len(known[0])
                if k <= len(key) and key[:k] == known[0] and same_messages(messages[:k], known[1]):
                    refs, problems, start = list(known[2]), list(known[3]), k
        seen, by_text = self._seen, self._by_text
        for n in range(start, len(messages)):
            message = messages[n]
            origin = key[n] if key is not None else None
            found = seen.get(origin) if origin is not None else None
            if found is None or not same_messages(found[0], message):
                # the same turn in another agent's history: another dict, the same content string
                text = message.get("content") if type(message) is dict else None
                found = by_text.get(id(text)) if type(text) is str else None
                if found is None or not same_messages(found[0], message):
                    found = (message, *self._content(message, "message", contents))
                    if type(text) is str:
                        if len(by_text) >= RAW_MEMORY:
                            by_text.clear()
                        by_text[id(text)] = found  # the copy holds the string: its id is not reused meanwhile
                if origin is not None:
                    if len(seen) >= RAW_MEMORY:
                        seen.clear()
                    seen[origin] = found
            ref, problem = found[1], found[2]
            refs.append(ref)
            problems.append(problem)
        if key is not None:
            if len(self._conversations) >= CONVERSATIONS:
                self._conversations.clear()
            self._conversations[key[0]] = (key, messages, refs, problems)
        return refs, problems

    def add(self, event_id: str | None, model: Any, exchange: LlmExchange,
            calls: list[tuple[Any, ...]], contents: list[tuple[Any, ...]]) -> None:
        """Append the call's ``llm_calls`` row to ``calls`` and its new contents to ``contents``."""
        notes: list[str] = []
        refs: list[int] = []
        messages = exchange.messages
        if messages is not None and type(messages) is not list:
            messages = dump_response(messages)  # a rendering left to the writer (AG2 1.x's history), made now
        if type(messages) is list:
            refs, problems = self._message_refs(messages, exchange.origins, contents)
            if any(problems):
                notes += [f"message {n} {problem}" for n, problem in enumerate(problems) if problem]
        else:
            notes.append("no messages recorded" if messages is None else "messages not a list")
        tools = None
        if exchange.tools is not None:
            tools, problem = self._content(exchange.tools, "tools", contents)
            if problem:
                notes.append(f"tools {problem}")
        response = None
        dumped, why = _dumped(exchange.response)
        if dumped is None:
            notes.append(why or ("no response recorded" if exchange.response is None else "response not serialisable"))
        else:
            response, problem = self._content(dumped, "response", contents, remember=False)
            if problem:
                notes.append(f"response {problem}")
        request_params = exchange.params
        params = self._stored_params(request_params) if request_params else None
        calls.append(make_row(
            LlmCallRow, event_id=event_id, run_id=self._run_id, model=_model(exchange.model, model),
            messages=_raw_json(refs).decode(), tools=tools, params=params if isinstance(params, str) else None,
            response=response, replayable=0 if notes else 1, note="; ".join(notes) or None))

    def _stored_params(self, params: dict[str, Any]) -> Any:
        try:
            raw = _raw_json(params)
        except Exception:  # not plain JSON: encoded each time
            return self._encode(params, self._max_params)
        stored = self._params.get(raw)
        if stored is None:
            if len(self._params) >= CONVERSATIONS:
                self._params.clear()
            stored = self._params[raw] = self._encode(params, self._max_params)
        return stored

    def _content(self, value: Any, kind: str, contents: list[tuple[Any, ...]], remember: bool = True
                 ) -> tuple[int, str | None]:
        """The ordinal of ``value`` as stored, storing it when this run has not yet; and what stops it
        being served again as it was (cut, not storable as JSON), if anything. ``remember``: keep its
        raw digest (not for a response: each is new)."""
        try:
            raw = _raw_json(value)
        except Exception:  # not plain JSON (an object): cleaned each time, never remembered
            raw = None
        key = hashlib.blake2b(raw, digest_size=HASH_CHARS // 2).digest() if raw is not None else b""
        known = self._raw.get(key) if remember and raw is not None else None
        if known is not None:
            return self._ordinals[known[0]], known[1]
        body, problem = stored_text(self._encode, value, self._max_message, raw)
        size = len(raw) if raw is not None else len(body)
        if problem is None and size > self._max_message:
            problem = f"cut at {self._max_message} bytes"
        # stored as msgspec wrote it (the usual content): its digest is the one just made
        digest = key.hex() if raw is not None and len(body) == len(raw) and body == raw.decode() else content_hash(body)
        if remember and raw is not None:
            if len(self._raw) >= RAW_MEMORY:
                self._raw.clear()
            self._raw[key] = (digest, problem)
        ordinal = self._ordinals.get(digest)
        if ordinal is None:
            ordinal = self._ordinals[digest] = len(self._ordinals)
            contents.append(make_row(LlmContentRow, run_id=self._run_id, ordinal=ordinal, hash=digest, kind=kind,
                                     body=body, size=size, cut=int(problem is not None and problem.startswith("cut"))))
        return ordinal, problem


def _model(requested: Any, reported: Any) -> str | None:
    """The model the request named, else the one the event names (what the response said)."""
    for model in (requested, reported):
        if type(model) is str and model:
            return model[:256]
    return None


_TRUSTED = ("openai.", "cmbagent_events.", "autogen.", "ag2.")  # modules whose response types we dump on the loop


def needs_user_code(response: Any) -> bool:
    """Whether dumping ``response`` runs code that is neither ours nor a model client library's: a
    custom client's own response type (AG2's ``ModelClient`` protocol allows any), a dict subclass, or
    OpenAI's ``Parsed*`` holding a structured output's own model. Such a response is dumped on the
    writer's user-code thread within ``user_code_timeout_s`` (:func:`described_response`), never on
    the writer's loop: a ``model_dump`` that never returns must not stop the run's writer."""
    kind = type(response)
    if response is None or kind is dict or kind is list or kind is Described or kind is Unreadable or kind is Failed:
        return False
    module = type.__getattribute__(kind, "__module__")
    name = type.__getattribute__(kind, "__name__")
    return not (type(module) is str and module.startswith(_TRUSTED)) or name.startswith("Parsed")


def described_response(sanitizer: Any, response: Any, limit: int) -> Described:
    """``response`` dumped with its own code and made plain data (bounded, secrets redacted:
    ``Sanitizer.plain``); call it on the writer's user-code thread (see :func:`needs_user_code`)."""
    dumped = dump_response(response)
    return Described(None if dumped is None else sanitizer.plain(dumped, limit))


def _dumped(response: Any) -> tuple[Any, str | None]:
    """The response as JSON-ready data (None: there is none or it could not be dumped, and why if known)."""
    kind = type(response)
    if kind is Described:
        return response.value, None
    if kind is Unreadable:  # (the writer process: its own code did not describe it in time, or failed)
        reason = response.reason.strip("<>")
        return None, f"response not described: {'UserCodeTimeout: ' if response.timed_out else ''}{reason}"
    if kind is Failed:
        return None, f"response not described: {type(response.error).__name__}: {response.error}"
    if needs_user_code(response):  # (rows.py has it described first: not reached)
        return None, "response not described: its own code was not run"
    return dump_response(response), None


def dump_response(response: Any) -> Any:
    """The response as JSON-ready data: a pydantic model's ``model_dump()`` (OpenAI's ``ChatCompletion``),
    a dict as it is; None when there is none or it cannot be dumped."""
    if response is None:
        return None
    if isinstance(response, (dict, list)):
        return response
    dump = getattr(response, "model_dump", None)
    if dump is None:
        return None
    try:  # pydantic 2: JSON types only (a structured output's parsed model too); AG2 (0.9) attaches its
        # message_retrieval_function to the response, a method: not part of what the client returned
        return dump(mode="json", exclude={"message_retrieval_function"})
    except TypeError:  # a model_dump without these options (a client's own response type)
        pass
    except Exception:
        return None
    try:
        return dump()
    except Exception:
        return None
