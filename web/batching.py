"""Micro-batches of concurrent requests: one ``process`` call for what arrived while the last one ran.

The worker classifies a micro-batch with one ``predict`` call; the API does the same with requests that
arrive together. Nothing waits for a batch to fill: the first request runs at once, those that arrive
meanwhile go together in the next call (at most ``max_batch``). ``process`` runs in the executor, so the
event loop keeps serving while the model runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, process: Callable[[list[T]], Sequence[R]], executor: Executor, max_batch: int = 32) -> None:
        self.process = process
        self.executor = executor
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._draining = False
        self._task: asyncio.Task[None] | None = None  # kept: the loop holds tasks only weakly

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    results = await loop.run_in_executor(self.executor, self.process, [item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} items")
                except Exception as exc:  # every caller of the batch gets the failure
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # the caller may have gone (client disconnected)
                        future.set_result(result)
        finally:
            self._draining = False
