"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for offline tests of real clients.

Real clients (MARS, CMBAgent, AG2's own OpenAI client) run their real code against it: it answers
``POST /v1/chat/completions`` with plain text, tool calls and structured outputs, deterministically,
and counts the tokens it served so a test can compare them with what was captured.

    with FakeOpenAI() as fake:                  # binds 127.0.0.1 on a free port, never another host
        os.environ["OPENAI_BASE_URL"] = fake.base_url
        ...                                     # the client under test
        fake.usage                              # {"calls": n, "prompt_tokens": ..., "completion_tokens": ...}

How a reply is chosen, first match wins:

1. ``rules``: callables ``(request) -> Reply | None`` given by the test (``request`` is the parsed
   JSON body); the first that returns a :class:`Reply` answers.
2. A structured-output request (``response_format`` of type ``json_schema``): a JSON document built
   from the schema (first enum value, ``const``, ``default``, None for optional values, one array
   item, every property); :meth:`FakeOpenAI.set_fields` chooses fields of one schema by its name.
3. Tools offered and the last message is not a tool result (or ``tool_choice`` forces a call): a
   call of ``tool_choice``'s function, else of the first tool, with arguments built from its
   parameter schema (and :meth:`FakeOpenAI.set_fields` for that tool's name).
4. Otherwise text: ``"fake reply to <n> messages"`` plus ``text_suffix`` (e.g. ``" TERMINATE"``).

A reply depends only on the request and the configuration, never on earlier requests: the same
client run twice is answered the same twice.

Tokens are words: prompt tokens are the whitespace-separated words of every message's text content,
completion tokens the words of the reply's content, or of each tool call's name and JSON arguments.
``stream: true`` is answered as server-sent events (with usage in the last chunk when asked).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAI", "Reply", "ToolCallReply", "count_words", "instance_from_schema"]

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ToolCallReply:
    """One tool call in a reply: ``name`` with JSON-encodable ``arguments``."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """What the fake model says: text ``content`` and/or ``tool_calls``."""

    content: str | None = None
    tool_calls: tuple[ToolCallReply, ...] = ()


Rule = Callable[[dict[str, Any]], "Reply | None"]


def count_words(text: Any) -> int:
    """Whitespace-separated words of a string, of a list of text parts, else 0."""
    if isinstance(text, str):
        return len(text.split())
    if isinstance(text, list):
        return sum(count_words(part.get("text")) for part in text if isinstance(part, dict))
    return 0


def instance_from_schema(schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None, name: str = "value",
                         _depth: int = 0) -> Any:
    """A deterministic JSON value that satisfies the common parts of a JSON schema (pydantic's output)."""
    defs = defs if defs is not None else {**schema.get("$defs", {}), **schema.get("definitions", {})}
    if _depth > 12:
        return None
    if "$ref" in schema:
        ref = str(schema["$ref"]).rsplit("/", 1)[-1]
        return instance_from_schema(defs.get(ref, {}), defs, name, _depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0] if schema["enum"] else None
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        choices = schema.get(key, [])
        if key != "allOf" and any(s.get("type") == "null" for s in choices):
            return None  # an optional value (pydantic's ``X | None``): left out
        options = [s for s in choices if s.get("type") != "null"]
        if options:
            return instance_from_schema(options[0], defs, name, _depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties", {})
        return {key: instance_from_schema(sub, defs, key, _depth + 1) for key, sub in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [instance_from_schema(schema.get("items", {}), defs, name, _depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"{name} text"


def _schema_of(response_format: Any) -> dict[str, Any] | None:
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return dict(spec.get("schema") or {})
    return None


class FakeOpenAI:
    """The server; start with ``with FakeOpenAI() as fake`` or :meth:`start` / :meth:`stop`.

    Args:
        rules: tried in order for each request before the defaults (see the module docstring).
        text_suffix: appended to default text replies.
        model: the ``model`` field of the responses (default: the request's).
    """

    def __init__(self, rules: Iterable[Rule] = (), *, text_suffix: str = "", model: str | None = None) -> None:
        self.rules = list(rules)
        self.text_suffix = text_suffix
        self.model = model
        self.fields: dict[str, dict[str, Any]] = {}  # schema or tool name -> fields to answer with
        self.requests: list[dict[str, Any]] = []  # every chat-completions body received, in order
        self.replies: list[dict[str, Any]] = []  # the assistant message served for each
        self.usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What a client takes as ``base_url`` / ``OPENAI_BASE_URL``."""
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answers ---------------------------------------------------------------------------
    def set_fields(self, name: str, **values: Any) -> None:
        """Fill these fields when answering the structured-output schema or the tool called ``name``
        (the rest comes from the schema); a callable value is called with the request."""
        self.fields.setdefault(name, {}).update(values)

    def _document(self, name: str, schema: Mapping[str, Any], request: dict[str, Any]) -> Any:
        document = instance_from_schema(schema)
        chosen = self.fields.get(name)
        if chosen and isinstance(document, dict):
            for key, value in chosen.items():
                document[key] = value(request) if callable(value) else value
        return document

    def choose(self, request: dict[str, Any]) -> Reply:
        """The reply to one request (rules, structured output, tool call, text)."""
        for rule in self.rules:
            reply = rule(request)
            if reply is not None:
                return reply
        schema = _schema_of(request.get("response_format"))
        if schema is not None:
            name = str((request["response_format"].get("json_schema") or {}).get("name"))
            return Reply(content=json.dumps(self._document(name, schema, request)))
        tools = [t for t in request.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
        messages = request.get("messages") or []
        last_role = messages[-1].get("role") if messages and isinstance(messages[-1], dict) else None
        choice = request.get("tool_choice")
        forced = choice == "required" or isinstance(choice, dict)
        if tools and choice != "none" and (forced or last_role != "tool"):
            wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
            tool = next((t for t in tools if t["function"].get("name") == wanted), tools[0])["function"]
            arguments = self._document(tool["name"], tool.get("parameters") or {"type": "object"}, request)
            return Reply(tool_calls=(ToolCallReply(tool["name"], arguments if isinstance(arguments, dict) else {}),))
        return Reply(content=f"fake reply to {len(messages)} messages{self.text_suffix}")

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The chat-completion object for ``request``; counts it."""
        with self._lock:
            self.requests.append(request)
            number = len(self.requests)
            reply = self.choose(request)
            message: dict[str, Any] = {"role": "assistant", "content": reply.content}
            completion = count_words(reply.content)
            if reply.tool_calls:
                calls = []
                for i, call in enumerate(reply.tool_calls):
                    arguments = json.dumps(dict(call.arguments))
                    completion += count_words(call.name) + count_words(arguments)
                    calls.append({"id": f"call_{number}_{i}", "type": "function",
                                  "function": {"name": call.name, "arguments": arguments}})
                message["tool_calls"] = calls
            prompt = sum(count_words(m.get("content")) for m in request.get("messages") or [] if isinstance(m, dict))
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            self.replies.append(message)
            self.usage["calls"] += 1
            for key, value in usage.items():
                self.usage[key] += value
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model or request.get("model") or "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                         "logprobs": None}],
            "usage": usage,
            "system_fingerprint": "fake",
        }


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the counters instead
        pass

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        try:
            request = json.loads(raw or b"{}")
            if not isinstance(request, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            self._send_json(400, {"error": {"message": f"bad JSON body: {exc}", "type": "invalid_request_error"}})
            return
        try:
            completion = self.server_fake.answer(request)
        except Exception as exc:  # a rule that failed: tell the client, keep serving
            self._send_json(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}})
            return
        if request.get("stream"):
            self._stream(completion, bool((request.get("stream_options") or {}).get("include_usage")))
        else:
            self._send_json(200, completion)

    def _stream(self, completion: dict[str, Any], include_usage: bool) -> None:
        """The same answer as server-sent events: the whole message in one delta, then the finish."""
        choice = completion["choices"][0]
        message = choice["message"]
        delta: dict[str, Any] = {"role": "assistant", "content": message["content"]}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
        chunks = [
            {**base, "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {**base, "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]},
        ]
        if include_usage:
            chunks.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": completion["usage"]})
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
