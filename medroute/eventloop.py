"""The event loop every medroute process runs on: uvloop where installed (about twice as fast on
socket-heavy work such as the listeners), else asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the fastest available loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def use_fastest_loop() -> None:
    """Make the fastest available loop the current one, for frameworks that take the current loop
    rather than run a coroutine themselves (the Faust worker)."""
    factory = loop_factory()
    if factory is not None:
        asyncio.set_event_loop(factory())
