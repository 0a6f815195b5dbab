"""The duplicate window: time-bounded, size-bounded, oldest first."""

from __future__ import annotations

from listeners.mllp.dedup import RecentMessages, identity_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_seen_within_window_only() -> None:
    clock = Clock()
    recent = RecentMessages(window=600, max_entries=10, clock=clock)
    recent.add(("APP", "FAC", "1"))
    assert recent.seen(("APP", "FAC", "1"))
    assert not recent.seen(("APP", "FAC", "2"))
    clock.now += 599
    assert recent.seen(("APP", "FAC", "1"))
    clock.now += 2
    assert not recent.seen(("APP", "FAC", "1"))
    assert len(recent) == 0


def test_bounded_size_evicts_oldest() -> None:
    clock = Clock()
    recent = RecentMessages(window=600, max_entries=3, clock=clock)
    for n in range(5):
        clock.now += 1
        recent.add(n)
    assert len(recent) == 3
    assert [recent.seen(n) for n in range(5)] == [False, False, True, True, True]


def test_re_adding_refreshes() -> None:
    clock = Clock()
    recent = RecentMessages(window=10, max_entries=2, clock=clock)
    recent.add("a")
    clock.now += 5
    recent.add("b")
    recent.add("a")  # "a" is now the newest
    recent.add("c")
    assert not recent.seen("b") and recent.seen("a") and recent.seen("c")


def test_disabled() -> None:
    recent = RecentMessages(window=0, max_entries=10)
    recent.add("a")
    assert not recent.seen("a") and len(recent) == 0


def test_entries_from_other_processes_keep_their_own_time() -> None:
    clock = Clock()
    recent = RecentMessages(window=600, max_entries=10, clock=clock)
    recent.add("old", at=clock.now - 700)  # already outside the window: not kept
    recent.add("shared", at=clock.now - 500)
    assert not recent.seen("old") and recent.seen("shared")
    recent.add("shared", at=clock.now - 550)  # an older copy of the entry does not move it back
    clock.now += 150
    assert not recent.seen("shared")


def test_identity_key_is_a_digest() -> None:
    key = identity_key("LAB", "HOSP", "MSG0001")
    assert len(key) == 64 and "MSG0001" not in key
    assert key != identity_key("LAB", "HOSP", "MSG0002") and key != identity_key("LABHOSP", "", "MSG0001")
