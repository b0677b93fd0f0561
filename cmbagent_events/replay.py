"""Run a captured run again offline: every model call answered from the recorded run.

    with replay(run_id):                       # or: async with replay(run_id):
        one_shot(task, ..., callbacks=capture_callbacks())   # no network, no API key needed

Inside the block, each model call the AG2 hooks see (classic AG2's ``OpenAIWrapper.create``: AG2
0.10-0.14, autogen 0.14, CMBAgent's fork, and so MARS and CMBAgent) is served the response the model
gave when the run was recorded, per agent and in order, instead of calling the model:

- ``match="request"`` serves the agent's next recorded call whose request (model, messages, tools)
  equals this one, compared as it was stored (the same redaction and size bounds), after removing
  what the ``ignore`` regular expressions match (a timestamp in a system message); ``"position"``
  serves the agent's n-th recorded response whatever was asked.
- A request with no recorded match is a divergence: ``on_divergence="stop"`` raises
  :class:`~cmbagent_events.errors.ReplayDivergence` naming the agent, its call number and the first
  differing message (recorded against now, a unified diff); ``"live"`` passes it and every later
  call to the real model (a fork of the run from there); ``"position"`` serves by position from there.
- Tools and code run for real (they are your local code); ``tools="recorded"`` answers classic AG2's
  tool calls with the recorded results instead (per agent and tool, in order; a result is what was
  stored, cut at ``CMBAGENT_EVENT_MAX_OUTPUT_SIZE``), for tools that call paid services or are slow.

A capture run open meanwhile records the replayed run as a new run with ``meta.replay_of`` (and
``meta.diverged_at`` when it diverged): ``cmbagent-events diff ORIGINAL REPLAYED`` shows what changed.
:func:`replayable` (and ``cmbagent-events replayable RUN``) tells which recorded calls can be served.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import CaptureConfig
from .errors import ReplayDivergence, ReplayError

ON_DIVERGENCE = ("stop", "live", "position")
TOOLS = ("live", "recorded")
MATCHES = ("request", "position")
DIFF_LINES = 40  # lines of unified diff a divergence shows

_lock = threading.Lock()
_active: list[Replayer] = []  # the replay open in this process (one at a time)
LIVE = object()  # what Replayer.serve answers to pass a call to the real model


def active_replay() -> Replayer | None:
    """The replay open in this process, if any (AG2 1.x's capturing middleware asks on each model call)."""
    return _active[0] if _active else None


@dataclass
class RecordedCall:
    """One recorded model call as replay needs it."""

    seq: int
    event_id: str
    agent: str | None
    model: str | None
    texts: list[str | None]  # its messages as stored (JSON text)
    tools: str | None
    response: Any
    servable: bool
    why: str | None
    keys: tuple[str, ...] = ()
    used: bool = False


@dataclass
class ReplayReport:
    """What a replay did: ``served`` recorded responses, ``passed_live`` calls given to the model,
    where it ``diverged`` (agent, call, seq), and the recorded calls never asked for."""

    run_id: str
    recorded: int
    served: int = 0
    passed_live: int = 0
    diverged_at: dict[str, Any] | None = None
    unused: int = 0
    servable: int = 0
    not_servable: list[dict[str, Any]] = field(default_factory=list)
    tools_served: int = 0  # tools="recorded": tool calls answered from the record
    tools_live: int = 0  # ... and the ones the record had no result for (run for real)

    def summary(self) -> str:
        parts = [f"replay of {self.run_id}: {self.served} of {self.recorded} recorded model calls served"]
        if self.diverged_at is not None:
            d = self.diverged_at
            seq = f" (seq {d['seq']})" if d.get("seq") is not None else ""
            parts.append(f"diverged at {d['agent']}'s call {d['call']}{seq}")
        if self.passed_live:
            parts.append(f"{self.passed_live} passed to the model")
        if self.unused:
            parts.append(f"{self.unused} recorded calls not asked for")
        if self.tools_served or self.tools_live:
            parts.append(f"tool results: {self.tools_served} from the record, {self.tools_live} run for real")
        return "; ".join(parts)


class Replayer:
    """Serves recorded responses (thread-safe: AG2 calls models from its own threads too)."""

    LIVE = LIVE  # for the integrations, which do not import this module

    def __init__(self, run_id: str, calls: list[dict[str, Any]], *, on_divergence: str = "stop",
                 match: str = "request", ignore: Iterable[str] = (), config: CaptureConfig | None = None) -> None:
        if on_divergence not in ON_DIVERGENCE:
            raise ValueError(f"on_divergence must be one of {', '.join(ON_DIVERGENCE)}, got {on_divergence!r}")
        if match not in MATCHES:
            raise ValueError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
        from .writer.encode import Sanitizer

        self.run_id = run_id
        self.on_divergence = on_divergence
        self.by_position = match == "position"
        self.live = False
        self._ignore = [re.compile(p) for p in ignore]
        self._config = config or CaptureConfig.from_env()
        self._sanitizer = Sanitizer(self._config.secret_keys)
        self._lock = threading.Lock()
        self._calls: dict[str | None, list[RecordedCall]] = {}
        self._counts: dict[str | None, int] = {}
        recorded = [_recorded(c) for c in calls]
        for call in recorded:
            call.keys = self._keys(call.texts, call.tools)
            self._calls.setdefault(call.agent, []).append(call)
        self.report = ReplayReport(run_id, len(recorded), servable=sum(c.servable for c in recorded),
                                   not_servable=[{"seq": c.seq, "event_id": c.event_id, "agent": c.agent, "why": c.why}
                                                 for c in recorded if not c.servable])
        self._tools: dict[tuple[Any, Any], list[tuple[bool, Any]]] = {}

    # -- matching --------------------------------------------------------------------------------------
    def _key(self, text: str | None) -> str:
        """What a stored message is compared by: its JSON with the keys sorted (a message equal to
        another is stored once, whichever key order came first), less what ``ignore`` matches."""
        if text is None:
            return ""
        try:
            text = json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            pass
        for pattern in self._ignore:
            text = pattern.sub("", text)
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def _keys(self, texts: list[str | None], tools: str | None) -> tuple[str, ...]:
        return (*(self._key(t) for t in texts), self._key(tools))

    def _live_texts(self, params: dict[str, Any]) -> tuple[list[str | None], str | None]:
        """The request's messages and tools as the writer would store them."""
        from .writer.llm_rows import stored_text

        limit = self._config.max_llm_message_size
        messages = params.get("messages")
        texts: list[str | None] = [stored_text(self._encode, m, limit)[0] for m in messages] \
            if isinstance(messages, list) else []
        tools = params.get("tools")
        return texts, stored_text(self._encode, tools, limit)[0] if tools is not None else None

    def _encode(self, value: Any, limit: int) -> Any:
        return self._sanitizer.encode_column([value], limit)[0]

    def serve(self, agent: Any, params: dict[str, Any], *, raw: bool = False) -> Any:
        """The recorded response for ``agent``'s call with ``params`` (as an object the client returns;
        ``raw``: its JSON), or ``LIVE`` (pass it to the model).

        Raises:
            ReplayDivergence: no recorded call matches and ``on_divergence="stop"``.
        """
        name = getattr(agent, "name", None) if agent is not None else None
        with self._lock:
            number = self._counts[name] = self._counts.get(name, 0) + 1
            if self.live:
                self.report.passed_live += 1
                return LIVE
            queue = self._calls.get(name, [])
            texts, tools = self._live_texts(params)
            found = self._next(queue) if self.by_position else self._matching(queue, params, texts, tools)
            if found is None or not found.servable:
                served = self._diverge(agent, name, number, queue, texts, found)
                if served is LIVE:
                    return LIVE
                found = served
            found.used = True
            self.report.served += 1
        self._annotate(agent, replay_of=self.run_id)
        return found.response if raw else _response(found.response)

    def _next(self, queue: list[RecordedCall]) -> RecordedCall | None:
        return next((c for c in queue if not c.used), None)

    def _matching(self, queue: list[RecordedCall], params: dict[str, Any], texts: list[str | None],
                  tools: str | None) -> RecordedCall | None:
        keys = self._keys(texts, tools)
        model = params.get("model")
        for call in queue:
            if not call.used and call.keys == keys and (call.model is None or model is None or call.model == model):
                return call
        return None

    def _diverge(self, agent: Any, name: str | None, number: int, queue: list[RecordedCall],
                 texts: list[str | None], unservable: RecordedCall | None = None) -> Any:
        expected = unservable or self._next(queue)
        if unservable is not None:
            unservable.used = True
            reason = f"the recorded call (seq {unservable.seq}) cannot be served: {unservable.why}"
        elif expected is None:
            reason = "the recorded run made no more calls for this agent"
        else:
            reason = "the request differs from the recorded one"
        diff = _first_difference(expected.texts if expected is not None else [], texts)
        seq = expected.seq if expected is not None else None
        where = {"agent": name, "call": number, "seq": seq}
        if self.report.diverged_at is None:
            self.report.diverged_at = where
            self._annotate(agent, replay_of=self.run_id, diverged_at=where)
        if self.on_divergence == "live":
            self.live = True
            self.report.passed_live += 1
            return LIVE
        if self.on_divergence == "position" and expected is not None and expected.servable and unservable is None:
            self.by_position = True
            return expected
        raise ReplayDivergence(f"replay of run {self.run_id} diverged at {name}'s model call {number}: {reason}"
                               + (f"\n{diff}" if diff else ""), agent=name, call=number,
                               seq=seq, diff=diff)

    def _annotate(self, agent: Any, **meta: Any) -> None:
        """Mark the run capturing this replay (if one is open) as a replay of the recorded run."""
        from .current_run import run_for

        run = run_for(agent)
        if run is not None:
            run.annotate(**meta)

    # -- tools (tools="recorded") ---------------------------------------------------------------------
    def add_tool_results(self, events: list[dict[str, Any]]) -> None:
        """The recorded ``tool_call`` events, to answer tool calls with (per agent and tool, in order)."""
        for event in events:
            inputs: dict[str, Any] = event["inputs"] if isinstance(event.get("inputs"), dict) else {}
            outputs: dict[str, Any] = event["outputs"] if isinstance(event.get("outputs"), dict) else {}
            meta: dict[str, Any] = event["meta"] if isinstance(event.get("meta"), dict) else {}
            key = (event.get("agent_name"), inputs.get("tool_name"))
            self._tools.setdefault(key, []).append((meta.get("success") is not False, outputs.get("result")))

    def tool_result(self, agent: Any, func_call: Any) -> Any:
        """``execute_function``'s answer from the record: ``(success, {"name", "role", "content"})``, or
        None when the recorded run has no (more) calls of that tool by that agent (it runs for real)."""
        name = func_call.get("name") if isinstance(func_call, dict) else None
        with self._lock:
            queue = self._tools.get((getattr(agent, "name", None), name))
            if not queue:
                self.report.tools_live += 1
                return None
            success, content = queue.pop(0)
            self.report.tools_served += 1
        return success, {"name": name, "role": "function", "content": content}

    def finish(self) -> ReplayReport:
        self.report.unused = sum(1 for calls in self._calls.values() for c in calls if not c.used)
        return self.report


def _recorded(call: dict[str, Any]) -> RecordedCall:
    bodies = call.get("bodies") or {}
    texts = list(bodies.get("messages") or [])
    response = call.get("response")
    why = call.get("note") if not call.get("replayable") else None
    return RecordedCall(seq=call["seq"], event_id=call["event_id"], agent=call.get("agent"),
                        model=(call.get("request") or {}).get("model"), texts=texts, tools=bodies.get("tools"),
                        response=response, servable=bool(call.get("replayable")) and isinstance(response, dict),
                        why=why)


def _first_difference(recorded: list[str | None], now: list[str | None]) -> str:
    """A unified diff of the first message that differs (recorded against now), short."""
    for i in range(max(len(recorded), len(now))):
        a = recorded[i] if i < len(recorded) else None
        b = now[i] if i < len(now) else None
        if a != b:
            before = _pretty(a).splitlines()
            after = _pretty(b).splitlines()
            lines = list(difflib.unified_diff(before, after, f"recorded message {i}", f"now message {i}", lineterm="",
                                              n=1))
            if len(lines) > DIFF_LINES:
                lines = [*lines[:DIFF_LINES], f"... ({len(lines) - DIFF_LINES} more lines)"]
            return "\n".join(lines)
    return ""


def _pretty(text: str | None) -> str:
    if text is None:
        return "(no message)"
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict) and isinstance(value.get("content"), str):  # the content line by line
        head = {k: v for k, v in value.items() if k != "content"}
        return json.dumps(head, ensure_ascii=False, sort_keys=True) + "\n" + value["content"]
    return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True)


class RecordedResponse:
    """A recorded response as the client returned it, its fields as attributes (what AG2 and the
    model clients read), ``model_dump()`` giving it back; AG2 sets ``cost`` on it as it does on a
    live one."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        for key, value in data.items():
            self.__dict__[key] = _wrap(value)

    def __getattr__(self, name: str) -> Any:  # a field the recorded JSON did not carry
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return self._data

    def __repr__(self) -> str:
        return f"RecordedResponse({self._data!r})"


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return RecordedResponse(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _response(data: Any) -> Any:
    """The recorded response as an object the model clients read (attributes) and AG2 dumps
    (``model_dump()`` gives back exactly what was recorded: a message AG2 keeps is the same dict)."""
    return RecordedResponse(data) if isinstance(data, dict) else data


# -- the public API -----------------------------------------------------------------------------------------
def replayable(run_id: str, db_url: str | None = None) -> dict[str, Any]:
    """Which recorded model calls of ``run_id`` can be served by :func:`replay`: ``{"run_id", "calls",
    "servable", "not_servable": [{"seq", "event_id", "agent", "why"}], "agents": {agent: calls}}``."""
    from .read import open_store

    with open_store(db_url) as store:
        full_id = store.run(run_id)["id"]
        calls = store.llm_calls(full_id)
    return servable_calls(full_id, calls)


def servable_calls(run_id: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`replayable`'s answer for the recorded ``calls`` (``Store.llm_calls``) of ``run_id``."""
    recorded = [_recorded(c) for c in calls]
    agents: dict[str, int] = {}
    for call in recorded:
        agents[call.agent or "?"] = agents.get(call.agent or "?", 0) + 1
    return {"run_id": run_id, "calls": len(recorded), "servable": sum(c.servable for c in recorded),
            "not_servable": [{"seq": c.seq, "event_id": c.event_id, "agent": c.agent, "why": c.why}
                             for c in recorded if not c.servable], "agents": agents}


class replay:  # a context manager used like a function, as contextlib's are
    """``with replay(run_id): ...`` / ``async with replay(run_id): ...``: model calls answered from the
    recorded run (see the module doc). ``report`` (a :class:`ReplayReport`) says what was served;
    its one-line summary is printed to stderr at the end unless ``quiet``.

    Raises (at entry):
        RunNotFound: no such run; ReplayError: nothing recorded to serve, or another replay is open;
        ValueError: an unknown ``on_divergence`` or ``match``.
    """

    def __init__(self, run_id: str, db_url: str | None = None, *, on_divergence: str = "stop",
                 match: str = "request", tools: str = "live", ignore: Iterable[str] = (),
                 quiet: bool = False) -> None:
        if tools not in TOOLS:
            raise ValueError(f"tools must be one of {', '.join(TOOLS)}, got {tools!r}")
        if on_divergence not in ON_DIVERGENCE or match not in MATCHES:
            raise ValueError(f"on_divergence must be one of {ON_DIVERGENCE} and match one of {MATCHES}, "
                             f"got {on_divergence!r} and {match!r}")
        self.run_id = run_id
        self.db_url = db_url
        self.options = {"on_divergence": on_divergence, "match": match, "ignore": tuple(ignore)}
        self.tools = tools
        self.quiet = quiet
        self.replayer: Replayer | None = None
        self.report: ReplayReport | None = None
        self._patches: list[Any] = []

    def _start(self, full_id: str, calls: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Replayer:
        """Open the replay: classic AG2's model calls are routed through it; AG2 1.x's capturing
        middleware asks it itself (:func:`active_replay`), so there a capture run must be open."""
        if not calls:
            raise ReplayError(f"run {full_id} has no recorded model calls to serve")
        if all(c.get("bodies") is None for c in calls):
            raise ReplayError(f"run {full_id} was captured without its model calls' requests and responses "
                              "(before they were recorded, or with CMBAGENT_CAPTURE_LLM_MESSAGES=false)")
        replayer = Replayer(full_id, calls, **self.options)  # type: ignore[arg-type]
        replayer.add_tool_results(tools)
        with _lock:
            if _active:
                raise ReplayError("another replay is open in this process; one at a time")
            _active.append(replayer)
        try:
            from .integrations import flavours

            if flavours.classic_installed():
                from .integrations.ag2_classic import replay as classic

                self._patches = classic.install(replayer, tools=self.tools == "recorded")
        except BaseException:
            with _lock:
                _active.remove(replayer)
            raise
        self.replayer = replayer
        return replayer

    def _stop(self) -> None:
        replayer = self.replayer
        if replayer is None:
            return
        if self._patches:
            from .integrations.ag2_classic import replay as classic

            classic.uninstall(self._patches)
        with _lock:
            if replayer in _active:
                _active.remove(replayer)
        self.report = replayer.finish()
        self.replayer = None
        if not self.quiet:
            print(f"cmbagent-events: {self.report.summary()}", file=sys.stderr)

    def __enter__(self) -> replay:
        from .read import open_store

        with open_store(self.db_url) as store:
            full_id = store.run(self.run_id)["id"]
            calls = store.llm_calls(full_id)
            tools = store.events(full_id, event_type="tool_call") if self.tools == "recorded" else []
        self._start(full_id, calls, tools)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    async def __aenter__(self) -> replay:
        from .read import open_async_store

        async with open_async_store(self.db_url) as store:
            full_id = await store.run_id(self.run_id)
            calls = await store.llm_calls(full_id)
            tools = await store.events(full_id, event_type="tool_call") if self.tools == "recorded" else []
        self._start(full_id, calls, tools)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop()
