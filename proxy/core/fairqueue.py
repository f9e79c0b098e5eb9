"""Round-robin between sources: the order argon2 checks are run in.

Owns the fairness of the one expensive step of a login. Each source has its own FIFO;
``pop`` takes the next item from the next source in turn, so a flood of wrong codes
from one network waits behind itself and a fresh source's check runs after at most one
check per other waiting source, not after the whole flood.

Pure: no asyncio; the adapter keeps futures in it and runs what ``pop`` returns.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        # Sources in turn order; a source with nothing waiting is not in it.
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, source: str, item: T) -> None:
        queue = self._queues.get(source)
        if queue is None:
            queue = self._queues[source] = deque()  # joins at the end of the turn
        queue.append(item)
        self._len += 1

    def pop(self) -> T | None:
        """The next item in turn, or None when nothing waits."""
        if not self._queues:
            return None
        source, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        self._len -= 1
        if queue:
            self._queues.move_to_end(source)  # its next item waits for everyone else's
        else:
            del self._queues[source]
        return item
