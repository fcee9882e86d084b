"""One object per running event loop, for clients whose connections belong to a loop.

redis.asyncio and aiohttp pools are bound to the loop that opened them. Under
uvicorn a worker has one loop, so this is one object per process; under a WSGI
server (runserver) asgiref runs each async view in a loop of its own, so objects
of closed loops are dropped here rather than each keeping connections for good.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerEventLoop(Generic[T]):
    def __init__(self, factory: Callable[[], T]):
        self.factory = factory
        self.instances: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], T]] = {}
        # The last loop asked about and its instance: under uvicorn, every call after the first.
        self.last: tuple[weakref.ref[asyncio.AbstractEventLoop], T] | None = None

    def existing(self) -> T | None:
        """This loop's instance if one was made, without making one."""
        loop = asyncio.get_running_loop()
        found = self.instances.get(id(loop))
        return found[1] if found is not None and found[0]() is loop else None

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        last = self.last
        if last is not None and last[0]() is loop:
            return last[1]
        found = self.instances.get(id(loop))
        if found is not None and found[0]() is loop:
            self.last = found
            return found[1]
        # A new loop (a dead loop's id may be reused): forget the instances of closed loops.
        for loop_id, (ref, _) in list(self.instances.items()):
            old = ref()
            if old is None or old.is_closed():
                del self.instances[loop_id]
        instance = self.factory()
        self.instances[id(loop)] = self.last = (weakref.ref(loop), instance)
        return instance
