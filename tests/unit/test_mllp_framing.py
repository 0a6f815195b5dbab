"""MLLP framing: every split of the stream, junk, several frames per read, oversize, truncation."""

from __future__ import annotations

import pytest

from formats.hl7.mllp import Frame, FrameError, MllpDecoder, wrap

MESSAGES = [b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||X1\r", b"MSH|second\r", b"", b"\r\n", b"a\x1cb"]


def decode_in_two(stream: bytes, split: int, max_frame: int = 1024) -> tuple[list[Frame | FrameError], int]:
    decoder = MllpDecoder(max_frame)
    events = decoder.feed(stream[:split]) + decoder.feed(stream[split:]) + decoder.close()
    return events, decoder.discarded


def payloads(events: list[Frame | FrameError]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def test_every_split_point_yields_the_same_frames() -> None:
    stream = b"".join(wrap(m) for m in MESSAGES)
    for split in range(len(stream) + 1):
        events, discarded = decode_in_two(stream, split)
        assert payloads(events) == MESSAGES, split
        assert discarded == 0
        assert not [e for e in events if isinstance(e, FrameError)]


def test_byte_by_byte_feeding() -> None:
    decoder = MllpDecoder()
    events = []
    for byte in b"".join(wrap(m) for m in MESSAGES):
        events += decoder.feed(bytes([byte]))
    assert payloads(events) == MESSAGES


def test_several_frames_in_one_read() -> None:
    events = MllpDecoder().feed(b"".join(wrap(m) for m in MESSAGES))
    assert payloads(events) == MESSAGES


def test_junk_before_start_block_is_counted_and_reported() -> None:
    stream = b"GET / HTTP/1.0\r\n" + wrap(MESSAGES[0])
    for split in range(len(stream) + 1):
        events, discarded = decode_in_two(stream, split)
        assert discarded == 16
        assert payloads(events) == [MESSAGES[0]]
        junk = [e for e in events if isinstance(e, FrameError)]
        assert len(junk) == 1 and junk[0].reason.code == "junk_before_start_block"
        assert junk[0].raw == b"GET / HTTP/1.0\r\n" and not junk[0].answerable
        assert isinstance(events[0], FrameError)  # reported in stream order


def test_whitespace_between_frames_is_counted_not_reported() -> None:
    stream = wrap(b"one") + b"\r\n" + wrap(b"two") + b"\n"
    events, discarded = decode_in_two(stream, 3)
    assert payloads(events) == [b"one", b"two"]
    assert discarded == 3
    assert all(isinstance(e, Frame) for e in events)


def test_junk_only_stream_is_reported_at_eof() -> None:
    decoder = MllpDecoder()
    assert decoder.feed(b"\x00\xff garbage") == []
    events = decoder.close()
    assert [e.reason.code for e in events] == ["junk_before_start_block"]
    assert events[0].raw == b"\x00\xff garbage"


def test_endless_junk_is_bounded_by_the_frame_limit() -> None:
    decoder = MllpDecoder(max_frame=100)
    events = []
    for _ in range(10):
        events += decoder.feed(b"x" * 55)
    events += decoder.close()
    assert all(len(e.raw) <= 100 for e in events)
    assert sum(e.size for e in events) == 550 == decoder.discarded


def test_oversize_frame_is_answerable_and_stream_resynchronises() -> None:
    big = b"MSH|" + b"x" * 200
    stream = wrap(big) + wrap(b"after")
    for split in range(len(stream) + 1):
        events, _ = decode_in_two(stream, split, max_frame=50)
        assert len(events) == 2, split
        error, frame = events
        assert isinstance(error, FrameError) and error.reason.code == "frame_too_large"
        assert error.answerable and error.size == len(big) and error.raw == big[:50]
        assert frame == Frame(b"after")


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    assert MllpDecoder(max_frame=5).feed(wrap(b"12345")) == [Frame(b"12345")]
    decoder = MllpDecoder(max_frame=5)
    assert decoder.feed(b"\x0b123") + decoder.feed(b"45\x1c") + decoder.feed(b"\r") == [Frame(b"12345")]


def test_oversize_with_end_block_split_after_the_limit() -> None:
    decoder = MllpDecoder(max_frame=4)
    events = decoder.feed(b"\x0b123456\x1c") + decoder.feed(b"\rok")
    assert [e.reason.code for e in events] == ["frame_too_large"]
    assert events[0].size == 6


def test_truncated_frame_at_eof() -> None:
    decoder = MllpDecoder()
    assert decoder.feed(b"\x0bMSH|^~\\&|partial") == []
    assert decoder.in_frame
    (event,) = decoder.close()
    assert event.reason.code == "truncated_frame" and event.raw == b"MSH|^~\\&|partial"
    assert not event.answerable and not decoder.in_frame


def test_start_block_inside_a_frame_abandons_it() -> None:
    events = MllpDecoder().feed(b"\x0bMSH|cut off\x0bMSH|whole\x1c\r")
    assert isinstance(events[0], FrameError) and events[0].reason.code == "truncated_frame"
    assert events[0].raw == b"MSH|cut off"
    assert events[1] == Frame(b"MSH|whole")


def test_lone_file_separator_is_content() -> None:
    assert MllpDecoder().feed(wrap(b"a\x1cb\x1c")) == [Frame(b"a\x1cb\x1c")]


def test_end_block_then_next_frame_starting_with_cr() -> None:
    decoder = MllpDecoder()
    events = decoder.feed(b"\x0bone\x1c") + decoder.feed(b"\r") + decoder.feed(b"\x0b\rtwo\x1c\r")
    assert payloads(events) == [b"one", b"\rtwo"]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        MllpDecoder(0)
