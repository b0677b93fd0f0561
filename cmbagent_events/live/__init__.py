"""Live view: in-process subscribers, database feeds, and the HTTP + WebSocket viewer server.

- :func:`subscribe` / ``run.subscribe()``: events of a run in this process, after commit.
- :class:`RunFeed`: a run's stored events replayed, then followed, from any process.
- ``cmbagent-events serve``: :mod:`.server`, the web viewer and its WebSocket stream.
"""

from .feed import FeedItem, RunFeed
from .subscribers import LiveEvent, Subscription, subscribe

__all__ = ["FeedItem", "LiveEvent", "RunFeed", "Subscription", "subscribe"]
