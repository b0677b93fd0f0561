"""AG2 1.x hubs (``ag2.network``): messages, handoffs with their reason, and turn failures."""

from __future__ import annotations

import weakref
from typing import Any

from ...capture import EventCaptureManager
from ...current_run import get_event_captor
from ..guard import Guard
from .common import usable

ENVELOPE = Guard("hub envelope capture")
TURN_FAILED = Guard("hub turn failure capture")

_SUBSTANTIVE = ("ag2.msg.text", "ag2.packet")


class CaptureHubListener:
    """A ``HubListener`` for one hub: messages, handoffs with their reason, and turn failures.

    ``hub.register_listener(CaptureHubListener(hub))``, or :func:`capture_hub`. Listener calls run
    on the posting agent's task; the run is ``run`` when given, else the current run.
    """

    def __init__(self, hub: Any, run: EventCaptureManager | None = None) -> None:
        self._hub = weakref.ref(hub)
        self._run = weakref.ref(run) if run is not None else None

    def _capturing_run(self) -> EventCaptureManager | None:
        if self._run is not None:
            return usable(self._run())
        return usable(get_event_captor())

    async def on_envelope_posted(self, envelope: Any, metadata: Any) -> None:
        self.envelope_posted(envelope, metadata)

    async def on_turn_failed(self, channel_id: str, agent_id: str, envelope_id: str, exc: BaseException) -> None:
        self.turn_failed(channel_id, agent_id, envelope_id, exc)

    def seen(self, method_name: str, *args: Any) -> None:
        """The hub called ``method_name`` (``on_envelope_posted`` / ``on_turn_failed``) on its listeners
        (the hooks' way in: synchronous, nothing here awaits)."""
        if method_name == "on_envelope_posted":
            self.envelope_posted(*args)
        elif method_name == "on_turn_failed":
            self.turn_failed(*args)

    @ENVELOPE
    def envelope_posted(self, envelope: Any, metadata: Any) -> None:
        if envelope.event_type not in _SUBSTANTIVE:
            return
        run = self._capturing_run()
        hub = self._hub()
        if run is not None and hub is not None:
            _capture_envelope(run, hub, envelope)

    @TURN_FAILED
    def turn_failed(self, channel_id: str, agent_id: str, envelope_id: str, exc: BaseException) -> None:
        run = self._capturing_run()
        hub = self._hub()
        if run is not None and hub is not None:
            run.capture_exception(hub.name_for(agent_id), exc, "hub_turn",
                                  {"channel_id": channel_id, "envelope_id": envelope_id, "framework": "ag2"})


def _capture_envelope(run: EventCaptureManager, hub: Any, envelope: Any) -> None:
    """One substantive envelope: a message, and a handoff when the channel says who speaks next."""
    data = envelope.event_data or {}
    sender = hub.name_for(envelope.sender_id)
    routing = data.get("routing") or {} if isinstance(data, dict) else {}
    content = data.get("text", data.get("body")) if isinstance(data, dict) else data
    next_id = routing.get("target") if routing.get("kind") == "handoff" else None
    if next_id is None:
        state = hub.adapter_state(envelope.channel_id)
        next_id = getattr(state, "expected_next_speaker", None)
    if next_id is None and envelope.audience and len(envelope.audience) == 1:
        next_id = envelope.audience[0]
    recipient = hub.name_for(next_id) if next_id else f"channel:{envelope.channel_id}"
    meta = {"channel_id": envelope.channel_id, "envelope_id": envelope.envelope_id, "framework": "ag2"}
    run.capture_message(sender, recipient, content, None, meta)
    if next_id is None or (next_id == envelope.sender_id and routing.get("kind") != "handoff"):
        return
    kind = routing.get("kind") or "text"
    reason = routing.get("reason") or (f"tool {routing['tool']}" if routing.get("tool") else
                                       ("handoff" if kind == "handoff" else "transition"))
    context = {"channel_id": envelope.channel_id, "envelope_id": envelope.envelope_id, "routing": kind,
               "event_type": envelope.event_type}
    if routing.get("tool"):
        context["tool"] = routing["tool"]
    run.capture_handoff(sender, hub.name_for(next_id), context, reason)


def capture_hub(hub: Any, run: EventCaptureManager | None = None) -> CaptureHubListener:
    """Register a :class:`CaptureHubListener` on ``hub`` and return it (``hub.unregister_listener`` removes it)."""
    listener = CaptureHubListener(hub, run)
    hub.register_listener(listener)
    return listener
