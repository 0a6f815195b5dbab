"""Incremental MLLP decoder: ``0x0B`` message ``0x1C 0x0D``, fed whatever TCP delivers.

Decisions where MLLP leaves room:

* Bytes outside a frame (before ``0x0B``) are discarded and counted in :attr:`MllpDecoder.discarded`.
  A run of them that is not only whitespace (some senders add CR/LF after a frame) is reported as a
  ``junk`` :class:`FrameError` once it ends, so it can be dead-lettered.
* A frame ends only at ``0x1C 0x0D``; a lone ``0x1C`` is content (and fails later as a control
  character). A ``0x0B`` inside a frame means the sender gave up on that frame and started another:
  the unfinished one is reported as truncated and decoding resynchronises on the new frame.
* An oversize frame keeps its first ``max_frame`` bytes, the rest is dropped, and it is reported when
  its end block arrives (``answerable``: the sender now waits for a negative ACK) or when a new start
  block or EOF cuts it short. The connection stays usable either way.
* At EOF an unfinished frame is reported as truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

from formats.hl7.errors import FRAME_TOO_LARGE, JUNK, TRUNCATED, Reason

START_BLOCK = 0x0B
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_FS = 0x1C
_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True)
class Frame:
    payload: bytes


@dataclass(frozen=True)
class FrameError:
    reason: Reason
    detail: str
    raw: bytes  # what was kept: at most ``max_frame`` bytes
    size: int  # how many bytes the problem covered
    answerable: bool = False  # a complete (oversize) frame: its sender waits for an answer


def wrap(message: bytes) -> bytes:
    """Frame one message for the wire."""
    return b"\x0b" + message + END_BLOCK


class MllpDecoder:
    """Turns a byte stream into :class:`Frame` and :class:`FrameError` events, in stream order."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self.discarded = 0  # bytes seen outside any frame, over the decoder's life
        self._in_frame = False
        self._buf = bytearray()
        self._dropped = 0  # bytes of the current frame beyond max_frame
        self._ends_with_fs = False  # the frame so far ends with 0x1C: a 0x0D next ends it
        self._junk = bytearray()
        self._junk_size = 0
        self._junk_meaningful = False

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended (e.g. to report it on an idle timeout)."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        events: list[Frame | FrameError] = []
        pos, size = 0, len(data)
        while pos < size:
            if not self._in_frame:
                start = data.find(START_BLOCK, pos)
                self._add_junk(data[pos : size if start < 0 else start], events)
                if start < 0:
                    break
                self._end_junk(events)
                self._in_frame = True
                pos = start + 1
                continue
            # An end block split across reads: the previous read ended with 0x1C.
            if self._ends_with_fs and data[pos] == 0x0D:
                self._drop_last_byte()
                events.append(self._finish_frame())
                pos += 1
                continue
            end = data.find(END_BLOCK, pos)
            restart = data.find(START_BLOCK, pos, size if end < 0 else end)
            if restart >= 0:
                self._append(data[pos:restart])
                events.append(self._abandon_frame("a new start block arrived before the end block"))
                self._in_frame = True
                pos = restart + 1
            elif end >= 0:
                if not self._buf and not self._dropped and end - pos <= self.max_frame:
                    events.append(Frame(data[pos:end]))  # whole frame in one read: no copy into _buf
                    self._in_frame = False
                else:
                    self._append(data[pos:end])
                    events.append(self._finish_frame())
                pos = end + 2
            else:
                self._append(data[pos:])
                self._ends_with_fs = data[-1] == _FS
                pos = size
        return events

    def close(self) -> list[FrameError]:
        """End of stream: report an unfinished frame or a pending junk run, and reset."""
        events: list[Frame | FrameError] = []
        if self._in_frame:
            events.append(self._abandon_frame("the connection ended inside a frame"))
        self._end_junk(events)
        return [e for e in events if isinstance(e, FrameError)]

    # -- frame content -------------------------------------------------------------------------

    def _append(self, chunk: bytes) -> None:
        self._ends_with_fs = False
        room = self.max_frame - len(self._buf)
        if len(chunk) <= room:
            self._buf += chunk
        else:
            self._buf += chunk[: max(room, 0)]
            self._dropped += len(chunk) - max(room, 0)

    def _drop_last_byte(self) -> None:
        if self._dropped:
            self._dropped -= 1
        else:
            self._buf.pop()

    def _take(self) -> tuple[bytes, int]:
        raw, total = bytes(self._buf), len(self._buf) + self._dropped
        self._buf.clear()
        self._dropped = 0
        self._ends_with_fs = False
        self._in_frame = False
        return raw, total

    def _finish_frame(self) -> Frame | FrameError:
        oversize = self._dropped > 0
        raw, total = self._take()
        if oversize:
            return FrameError(
                FRAME_TOO_LARGE,
                f"frame of {total} bytes exceeds the {self.max_frame} byte limit",
                raw,
                total,
                answerable=True,
            )
        return Frame(raw)

    def _abandon_frame(self, why: str) -> FrameError:
        oversize = self._dropped > 0
        raw, total = self._take()
        if oversize:
            detail = f"frame of at least {total} bytes exceeds the {self.max_frame} byte limit; {why}"
            return FrameError(FRAME_TOO_LARGE, detail, raw, total)
        return FrameError(TRUNCATED, f"frame of {total} bytes unfinished: {why}", raw, total)

    # -- bytes outside frames ------------------------------------------------------------------

    def _add_junk(self, chunk: bytes, events: list[Frame | FrameError]) -> None:
        if not chunk:
            return
        self.discarded += len(chunk)
        if not self._junk_meaningful and chunk.strip(_WHITESPACE):
            self._junk_meaningful = True
        room = self.max_frame - len(self._junk)
        self._junk += chunk[:room]
        self._junk_size += len(chunk)
        if self._junk_size >= self.max_frame:
            self._end_junk(events)  # bound memory on an endless stream of junk

    def _end_junk(self, events: list[Frame | FrameError]) -> None:
        if self._junk_meaningful:
            detail = f"{self._junk_size} bytes outside an MLLP frame (no 0x0B start block) discarded"
            events.append(FrameError(JUNK, detail, bytes(self._junk), self._junk_size))
        self._junk.clear()
        self._junk_size = 0
        self._junk_meaningful = False
