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
from functools import partial
from operator import methodcaller
from typing import Any

import msgspec

from ..capture_values import LlmExchange
from ..store.columns import LlmCallRow, LlmContentRow, make_row
from .encode import Sanitizer, fast_chunks

HASH_CHARS = 32  # hex characters of a content's BLAKE2b digest (128 bits)
RAW_MEMORY = 200_000  # raw digests remembered per run (then forgotten: only the cost of a re-clean)
CONVERSATIONS = 1_000  # conversations whose last request is remembered (then forgotten, as above)

_raw_json = msgspec.json.Encoder().encode
_digest = partial(hashlib.blake2b, digest_size=HASH_CHARS // 2)
_digest_bytes = methodcaller("digest")


def stored_text(encode: Callable[[Any, int], Any], value: Any, limit: int) -> tuple[str, str | None]:
    """``value`` as an llm content is stored (replay compares a live request's messages the same way),
    and why it could not be, if so."""
    return stored_body(encode(value, limit), value)


def stored_body(body: Any, value: Any) -> tuple[str, str | None]:
    """The writer's encoding of ``value`` as stored: a marker when only its own code could describe it."""
    if isinstance(body, str):
        return body, None
    return json.dumps(f"<not storable: {type(value).__name__}>"), "not storable as JSON"


def content_hash(body: str) -> str:
    """The key of a stored content: its stored JSON's BLAKE2b digest (replay hashes a live request's
    messages the same way, after the same redaction and bounds)."""
    return hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=HASH_CHARS // 2).hexdigest()


class _Cell:
    """A content as a call refers to it: its ordinal and what stops it being served again, known once
    the batch's new contents are stored (:meth:`LlmRows.finish`)."""

    __slots__ = ("ordinal", "problem")

    def __init__(self) -> None:
        self.ordinal = -1
        self.problem: str | None = None


class LlmRows:
    """Builds one run's llm rows (one instance per writer; not thread-safe: the writer's own).

    A batch's model calls are taken one by one (:meth:`add`: what each refers to, as cells), then
    stored together (:meth:`finish`): the contents new to the run are encoded, scanned for secrets
    and hashed a column at a time, in a few C calls, not one by one."""

    def __init__(self, run_id: str, sanitizer: Sanitizer, max_message_size: int, max_params_size: int) -> None:
        """``sanitizer``: the writer's (redaction, NUL escapes, strings cut at a limit with a marker)."""
        self._run_id = run_id
        self._sanitizer = sanitizer
        self._max_message = max_message_size
        self._max_params = max_params_size
        # this run's contents handed to the writer: hash -> ordinal. A batch that is then lost (counted
        # as dropped) loses its contents with it: later calls referring to them read as "missing".
        self._ordinals: dict[str, int] = {}
        self._raw: dict[bytes, _Cell] = {}  # raw JSON digest -> its cell
        # id of the caller's message dict -> (our copy of it, its cell): the usual message, re-sent
        # unchanged with every call of a chat, is known by one C-level dict comparison
        self._seen: dict[int, tuple[Any, _Cell]] = {}
        self._by_text: dict[int, tuple[Any, _Cell]] = {}  # the same, by its content string's id
        self._params: dict[bytes, Any] = {}  # a call's parameters (usually the same every call) as stored
        # a conversation's last request, by its first message's id: (origins, messages, cells). The next
        # call of that conversation re-sends it and adds to it; the part re-sent unchanged is known by
        # one C-level list comparison (by identity: the caller shares the copies), and only what was
        # added is looked at message by message.
        self._conversations: dict[int, tuple[tuple[int, ...], list[Any], list[_Cell]]] = {}
        self._pending: list[tuple[Any, _Cell, str, bool]] = []  # (value, cell, kind, remember) to store
        self._calls: list[tuple[Any, ...]] = []  # the batch's calls, their cells not yet known

    def _cell(self, value: Any, kind: str, remember: bool = True) -> _Cell:
        cell = _Cell()
        self._pending.append((value, cell, kind, remember))
        return cell

    def _message_cells(self, messages: list[Any], origins: list[int] | None) -> list[_Cell]:
        """The cells of a request's messages (new ones to be stored)."""
        cells: list[_Cell] = []
        start = 0
        key = None
        if origins is not None and len(origins) == len(messages) and messages:
            key = tuple(origins)
            known = self._conversations.get(key[0])
            if known is not None:
                k = len(known[0])
                if k <= len(key) and key[:k] == known[0] and _same(messages[:k], known[1]):
                    cells, start = known[2][:], k
        seen, by_text = self._seen, self._by_text
        for n in range(start, len(messages)):
            message = messages[n]
            origin = key[n] if key is not None else None
            found = seen.get(origin) if origin is not None else None
            if found is None or not _same(found[0], message):
                # the same turn in another agent's history: another dict, the same content string
                text = message.get("content") if type(message) is dict else None
                found = by_text.get(id(text)) if type(text) is str else None
                if found is None or not _same(found[0], message):
                    found = (message, self._cell(message, "message"))
                    if type(text) is str:
                        if len(by_text) >= RAW_MEMORY:
                            by_text.clear()
                        by_text[id(text)] = found  # the copy holds the string: its id is not reused meanwhile
                if origin is not None:
                    if len(seen) >= RAW_MEMORY:
                        seen.clear()
                    seen[origin] = found
            cells.append(found[1])
        if key is not None:
            if len(self._conversations) >= CONVERSATIONS:
                self._conversations.clear()
            self._conversations[key[0]] = (key, messages, cells)
        return cells

    def add(self, event_id: str | None, model: Any, exchange: LlmExchange) -> None:
        """Take a model call of the batch (its row is made by :meth:`finish`)."""
        notes: list[str] = []
        cells: list[_Cell] | None = None
        messages = exchange.messages
        if messages is not None and type(messages) is not list:
            messages = dump_response(messages)  # a rendering left to the writer (AG2 1.x's history), made now
        if type(messages) is list:
            cells = self._message_cells(messages, exchange.origins)
        else:
            notes.append("no messages recorded" if messages is None else "messages not a list")
        tools = self._cell(exchange.tools, "tools") if exchange.tools is not None else None
        response = None
        dumped = dump_response(exchange.response)
        if dumped is None:
            notes.append("no response recorded" if exchange.response is None else "response not serialisable")
        else:
            response = self._cell(dumped, "response", remember=False)  # each is new
        request_params = exchange.params
        params = self._stored_params(request_params) if request_params else None
        self._calls.append((event_id, _model(exchange.model, model), cells, tools,
                            params if isinstance(params, str) else None, response, notes))

    def finish(self, calls: list[tuple[Any, ...]], contents: list[tuple[Any, ...]]) -> None:
        """Store the batch's new contents (appended to ``contents``) and append its calls' rows to
        ``calls``."""
        if self._pending:
            self._store(self._pending, contents)
            self._pending = []
        for event_id, model, cells, tools, params, response, notes in self._calls:
            refs: list[int] = []
            if cells is not None:
                refs = [cell.ordinal for cell in cells]
                notes += [f"message {n} {cell.problem}" for n, cell in enumerate(cells) if cell.problem]
            if tools is not None and tools.problem:
                notes.append(f"tools {tools.problem}")
            if response is not None and response.problem:
                notes.append(f"response {response.problem}")
            calls.append(make_row(
                LlmCallRow, event_id=event_id, run_id=self._run_id, model=model, messages=_raw_json(refs).decode(),
                tools=tools.ordinal if tools is not None else None, params=params,
                response=response.ordinal if response is not None else None,
                replayable=0 if notes else 1, note="; ".join(notes) or None))
        self._calls = []

    def _store(self, pending: list[tuple[Any, _Cell, str, bool]], contents: list[tuple[Any, ...]]) -> None:
        """Fill the cells of ``pending``: a content the run has stored already (known by its raw JSON's
        digest) is referred to; the others are encoded together and stored."""
        values = [p[0] for p in pending]
        chunks, refused = fast_chunks(values)
        keys = list(map(_digest_bytes, map(_digest, chunks)))
        known_raw, fresh = self._raw, []
        for k, (_value, cell, _kind, remember) in enumerate(pending):
            if k in refused:  # not plain JSON (an object): cleaned each time, never remembered
                fresh.append(k)
                continue
            if remember:
                known = known_raw.get(keys[k])
                if known is not None:  # (filled by the time this batch's rows are made)
                    pending[k] = (known, cell, "", False)
                    continue
                if len(known_raw) >= RAW_MEMORY:
                    known_raw.clear()
                known_raw[keys[k]] = cell
            fresh.append(k)
        if fresh:
            bodies, redone = self._sanitizer.encoded_column([values[k] for k in fresh], [chunks[k] for k in fresh],
                                                           {n for n, k in enumerate(fresh) if k in refused},
                                                           self._max_message)
            ordinals, limit = self._ordinals, self._max_message
            for n, k in enumerate(fresh):
                value, cell, kind, _ = pending[k]
                body, problem = stored_body(bodies[n], value)
                size = len(chunks[k]) if k not in refused else len(body)
                if problem is None and size > limit:
                    problem = f"cut at {limit} bytes"
                # stored as msgspec wrote it (the usual content): its digest is the one just made
                digest = content_hash(body) if n in redone or problem else keys[k].hex()
                ordinal = ordinals.get(digest)
                if ordinal is None:
                    ordinal = ordinals[digest] = len(ordinals)
                    contents.append(make_row(LlmContentRow, run_id=self._run_id, ordinal=ordinal, hash=digest,
                                             kind=kind, body=body, size=size,
                                             cut=int(problem is not None and problem.startswith("cut"))))
                cell.ordinal, cell.problem = ordinal, problem
        for known, cell, kind, _ in pending:
            if not kind:  # a content stored before, or earlier in this batch
                cell.ordinal, cell.problem = known.ordinal, known.problem

    def _stored_params(self, params: dict[str, Any]) -> Any:
        try:
            raw = _raw_json(params)
        except Exception:  # not plain JSON: encoded each time
            return self._sanitizer.encode_column([params], self._max_params)[0]
        stored = self._params.get(raw)
        if stored is None:
            if len(self._params) >= CONVERSATIONS:
                self._params.clear()
            stored = self._params[raw] = self._sanitizer.encode_column([params], self._max_params)[0]
        return stored


def _same(a: Any, b: Any) -> bool:
    """``a == b`` for two messages (or lists of them), False when the comparison is not a plain yes
    (an array inside)."""
    try:
        return (a == b) is True
    except Exception:
        return False


def _model(requested: Any, reported: Any) -> str | None:
    """The model the request named, else the one the event names (what the response said)."""
    for model in (requested, reported):
        if type(model) is str and model:
            return model[:256]
    return None


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
