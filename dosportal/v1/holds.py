"""Live holds: each worker's heartbeat for its calls, and the settlement of holds whose worker died.

A call's hold is written at admission with what the call would be settled as
(`CreditHold.call`). While the call runs, its worker renews the hold every
`DOS_AI_HOLD_HEARTBEAT_SECONDS` (5 s) with what the call has delivered so far — for all of the
worker's calls in one statement (`billing.hotpath.HEARTBEAT_SQL`), so a thousand streams cost
one UPDATE every five seconds, and nothing on any call's own path.

A hold that nobody has renewed for `DOS_AI_HOLD_STALE_SECONDS` (30 s) belongs to a worker that
was killed (SIGKILL, the OOM killer, a deploy's time-out) or a host that was lost. Any worker
finds it on its next pass and settles it for what its last heartbeat reported — charged,
never above the hold, exactly once (the settlement deletes the hold; a worker that was only
slow finds its own later settlement a no-op) — and frees the call's slot under its key's
concurrency cap at once, rather than when the slot's lease runs out. `release_stale_holds`
(cron) does the same from outside, for a deployment that is down to its last worker.

Two guards keep a live call's hold from being taken:
- a worker never settles a hold it is serving itself;
- a worker looks for stale holds only once its own heartbeats have reached the database for
  a whole stale age: after a database outage every hold's heartbeat is old, and each live
  worker must have had the time to renew its own before anyone judges them. Before that, a
  dead worker's spool is adopted and replayed first: a settlement it had kept is exact,
  the heartbeat only a lower bound of what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Protocol

from django.conf import settings

from billing.services import stale_hold_settlement
from dosportal import metrics
from dosportal.v1 import ratelimit
from dosportal.v1.loops import PerEventLoop
from dosportal.v1.store import Store, StoreUnavailable, get_store

logger = logging.getLogger(__name__)

STALE_BATCH = 200


class Call(Protocol):
    def progress(self) -> tuple[int, int]: ...  # (prompt, completion) tokens delivered so far


class HoldKeeper:
    """Holds its calls weakly: a call dropped without being settled (a bug, or a response
    nobody started) stops being renewed, and its hold is then settled as a dead worker's."""

    def __init__(self, store: Store):
        self.store = store
        self.live: dict[int, weakref.ref[Call]] = {}
        self.task: asyncio.Task[None] | None = None
        self.healthy_since: float | None = None  # monotonic time of the first heartbeat after a failure

    def track(self, hold_id: int, call: Call) -> None:
        self.live[hold_id] = weakref.ref(call)
        self.start()

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def forget(self, hold_id: int) -> None:
        self.live.pop(hold_id, None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(settings.DOS_AI_HOLD_HEARTBEAT_SECONDS)
            try:
                await self.beat()
                if self.healthy_since is None:
                    self.healthy_since = time.monotonic()
                if time.monotonic() - self.healthy_since >= settings.DOS_AI_HOLD_STALE_SECONDS:
                    await self.recover()
            except StoreUnavailable:
                self.healthy_since = None
            except Exception:  # the keeper must outlive any one failure
                logger.exception("renewing or recovering holds failed")
                self.healthy_since = None

    async def beat(self) -> None:
        """Renew this worker's holds with what each call has delivered (or, with none, see that
        the database answers: the judgement of others' holds waits for that)."""
        progress = []
        for hold_id, ref in list(self.live.items()):
            call = ref()
            if call is None:
                self.live.pop(hold_id, None)
            else:
                progress.append((hold_id, *call.progress()))
        if progress:
            await self.store.heartbeat(progress)
        elif not await self.store.ping():
            raise StoreUnavailable("database unavailable (heartbeat)")

    async def recover(self) -> int:
        """Settle the holds no worker renews any more; how many were settled."""
        from dosportal.v1.settler import get_settler

        settler = get_settler()
        settler.adopt()  # a dead worker's kept settlements are exact: they go first
        await settler.flush()
        settled = 0
        for stale in await self.store.stale_holds(settings.DOS_AI_HOLD_STALE_SECONDS, STALE_BATCH):
            if stale.hold_id in self.live:
                continue  # ours, and alive
            settlement = stale_hold_settlement(
                hold_id=stale.hold_id,
                call=stale.call,
                prompt_tokens=stale.prompt_tokens,
                completion_tokens=stale.completion_tokens,
                latency_ms=stale.latency_ms,
            )
            if settlement is None:
                continue  # a hold from before heartbeats: release_stale_holds frees it
            await self.store.settle(settlement)
            settled += 1
            metrics.hold_recovered()
            logger.warning(
                "settled the hold of %s, whose worker died, for what it had delivered (%d + %d tokens)",
                settlement.request_id,
                settlement.prompt_tokens,
                settlement.completion_tokens,
            )
            call = stale.call or {}
            await ratelimit.free_slot(call.get("slot_key", ""), call.get("slot_member", ""))
        return settled

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


_keepers = PerEventLoop(lambda: HoldKeeper(get_store()))


def get_keeper() -> HoldKeeper:
    return _keepers.get()


def existing_keeper() -> HoldKeeper | None:
    return _keepers.existing()
