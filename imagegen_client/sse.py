"""A Server-Sent Events decoder that follows the WHATWG HTML spec's "event stream interpretation".

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

Fed bytes (or text) in whatever pieces the network delivers, it yields complete events:
- lines end in CRLF, LF or CR (a CR at the end of one piece and the LF starting the next are one
  line end); one leading byte-order mark is dropped; bytes are read as UTF-8, invalid ones replaced;
- `:` starts a comment line (ignored); a line without a colon is a field with an empty value;
  one space after the colon is removed;
- `data` lines of one event are joined with LF; `event` names the event (default `message`);
  `id` sets the last event id (kept for later events, ignored when it holds a NUL); `retry` sets
  the reconnection time in ms (digits only); unknown fields are ignored;
- a blank line dispatches the event; an event with no `data` is not dispatched (its id is still
  taken); an event cut off by the end of the stream is dropped.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event."""

    event: str = "message"
    data: str = ""
    id: str | None = None  # the last event id when it was dispatched ("" or None: none)
    retry: int | None = None  # the reconnection time (ms) the stream has set so far, if any


class SSEDecoder:
    """Incremental decoder: `feed` pieces of a stream, get the events they complete."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id: str | None = last_event_id
        self.retry: int | None = None
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._after_cr = False  # the previous piece ended in CR: an LF starting this one is part of it
        self._started = False  # the byte-order mark is only dropped at the very start
        self._data: list[str] = []
        self._event = ""
        self._id_buffer: str | None = last_event_id

    def feed(self, chunk: bytes | str) -> list[ServerSentEvent]:
        """Decode one piece of the stream; returns the events it completed, in order."""
        text = self._utf8.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = False
        self._buffer += text
        events: list[ServerSentEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            end, width = cut
            if width == 1 and self._buffer[end] == "\r" and end == len(self._buffer) - 1:
                self._after_cr = True  # maybe the CR of a CRLF split across pieces
            line, self._buffer = self._buffer[:end], self._buffer[end + width :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif field == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event=event or "message", data="\n".join(data), id=self.last_event_id, retry=self.retry)


def _line_end(buffer: str) -> tuple[int, int] | None:
    """(index, width) of the first line end in `buffer`: CRLF is 2 wide, a lone CR or LF 1."""
    cr, lf = buffer.find("\r"), buffer.find("\n")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, 1
    if cr + 1 < len(buffer) and buffer[cr + 1] == "\n":
        return cr, 2
    return cr, 1
