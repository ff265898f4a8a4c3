"""A Server-Sent Events parser (the WHATWG event-stream format), fed line by line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event of the live feed.

    ``kind`` is the SSE event name: ``hello`` (first, says whether the stream is
    authenticated), ``book``, ``trade``, ``market``, ``order``, ``job``, ``wallet``,
    ``host``, or ``resync`` (events were missed: refetch what you show). ``data`` is the
    event's JSON, parsed.
    """

    kind: str
    data: Any
    id: str | None = None
    raw: str = field(default="", repr=False)


class SSEParser:
    """Feed it decoded lines (without their line break); it returns completed events."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        if not self._data and not self._event:
            return None
        raw = "\n".join(self._data)
        kind = self._event or "message"
        if self._id is not None:
            self.last_event_id = self._id
        self._event, self._data = "", []
        try:
            data: Any = json.loads(raw) if raw else None
        except ValueError:
            data = raw
        return Event(kind=kind, data=data, id=self._id, raw=raw)
