"""Settlement that survives a database outage: a call that was served is charged exactly once.

`Settler.settle` writes a settlement at once. When the database cannot be reached it
keeps the settlement in memory and appends it to this worker's spool file on disk
(fsynced), answers the caller straight away (a stream still ends with its [DONE]), and
retries with growing pauses until the database takes it. Exactly-once comes from the
database, not from this module: writing a settlement deletes its hold in the same
statement, and a hold that is gone makes a second write a no-op — so a retry, a replay
after a restart, or two workers replaying the same file can never charge twice.

Each worker holds an exclusive lock (flock) on its own spool file. A worker that starts,
and every retry pass, adopts the files of workers that died (their lock is free) and
replays them. Spool files are named after the database they belong to, so a settlement is
never replayed into another database. A host that is lost with its disk loses its spool:
those holds are then released by `release_stale_holds` without a charge, and `balance`
reports holds older than a few minutes as a problem meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO

from django.conf import settings

from billing.settlement import Settlement
from dosportal import metrics
from dosportal.v1.loops import PerEventLoop
from dosportal.v1.store import Store, StoreUnavailable, get_store

logger = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.25
LAST_RETRY_SECONDS = 10.0


def database_tag() -> str:
    database = settings.DATABASES["default"]
    identity = f"{database.get('HOST')}:{database.get('PORT')}/{database.get('NAME')}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


class Spool:
    """This worker's append-only file of settlements that are waiting for the database."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.tag = database_tag()
        self.file: IO[str] | None = None
        self.path: Path | None = None

    def _open(self) -> IO[str]:
        if self.file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.path = self.directory / f"settle-{self.tag}-{os.getpid()}-{id(self)}.jsonl"
            self.file = self.path.open("a", encoding="utf-8")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        return self.file

    def _write(self, line: dict[str, object]) -> None:
        file = self._open()
        file.write(json.dumps(line, separators=(",", ":")) + "\n")
        file.flush()
        os.fsync(file.fileno())

    def keep(self, settlement: Settlement) -> None:
        self._write({"keep": settlement.to_json()})

    def done(self, hold_id: int) -> None:
        self._write({"done": hold_id})

    def forget_if_empty(self, pending: int) -> None:
        """Once nothing is waiting, start a fresh file (the old one only says what was done)."""
        if pending == 0 and self.file is not None and self.path is not None:
            self.path.unlink(missing_ok=True)
            self.file.close()
            self.file, self.path = None, None

    def adopt_orphans(self) -> list[Settlement]:
        """Settlements left in the spool files of dead workers of this database; their files are removed."""
        adopted: list[Settlement] = []
        if not self.directory.is_dir():
            return adopted
        for path in sorted(self.directory.glob(f"settle-{self.tag}-*.jsonl")):
            if path == self.path:
                continue
            try:
                file = path.open("r+", encoding="utf-8")
            except FileNotFoundError:
                continue
            with file:
                try:
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its worker is alive and will write these itself
                adopted.extend(read_waiting(file.read().splitlines()))
                path.unlink(missing_ok=True)
        return adopted


def read_waiting(lines: list[str]) -> list[Settlement]:
    """The settlements a spool file keeps that it does not also mark done."""
    kept: dict[int, Settlement] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash while writing it: nothing after it was confirmed
        if "keep" in entry:
            settlement = Settlement.from_json(entry["keep"])
            kept[settlement.hold_id] = settlement
        elif "done" in entry:
            kept.pop(entry["done"], None)
    return list(kept.values())


class Settler:
    def __init__(self, store: Store, spool: Spool):
        self.store = store
        self.spool = spool
        self.waiting: dict[int, Settlement] = {}
        self.retry_task: asyncio.Task[None] | None = None
        self.adopted = False

    def adopt(self) -> None:
        """Take over the spool files of dead workers (at start-up, and on every retry pass)."""
        self.adopted = True
        self._take(self.spool.adopt_orphans())

    async def settle(self, settlement: Settlement) -> bool:
        """Write it now (True), or keep it and write it as soon as the database is back (False)."""
        if not self.adopted:
            self.adopt()
        try:
            await self.store.settle(settlement)
            return True
        except StoreUnavailable:
            self._keep(settlement)
            return False
        except Exception:
            # Not an outage: a settlement the database refuses. Inputs are bounded so this should
            # not happen; if it does, the call was still served, so keep it (and say so loudly)
            # rather than answer 500 — `balance` reports its hold until an operator looks.
            logger.exception("settlement of %s refused by the database; kept for retry", settlement.request_id)
            self._keep(settlement)
            return False

    def _keep(self, settlement: Settlement) -> None:
        logger.warning("settlement of %s kept for retry", settlement.request_id)
        self._wait_for_database([settlement])

    def _take(self, settlements: list[Settlement]) -> None:
        for settlement in settlements:
            logger.warning("replaying the settlement of %s from a dead worker's spool", settlement.request_id)
        self._wait_for_database(settlements)

    def _wait_for_database(self, settlements: list[Settlement]) -> None:
        """Into this worker's spool and its retries, until the database takes them."""
        for settlement in settlements:
            self.spool.keep(settlement)
            self.waiting[settlement.hold_id] = settlement
        if settlements:
            self._start_retrying()

    def _start_retrying(self) -> None:
        if self.retry_task is None or self.retry_task.done():
            self.retry_task = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        pause = FIRST_RETRY_SECONDS
        while self.waiting:
            await asyncio.sleep(pause)
            self._take(self.spool.adopt_orphans())
            pause = FIRST_RETRY_SECONDS if await self.flush() else min(LAST_RETRY_SECONDS, pause * 2)

    async def flush(self) -> bool:
        """One pass over what is waiting; True when everything was written."""
        for hold_id, settlement in list(self.waiting.items()):
            metrics.settlement_retry()
            try:
                await self.store.settle(settlement)
            except StoreUnavailable:
                return False
            except Exception:
                logger.exception("settlement of %s refused by the database again", settlement.request_id)
                return False
            self.waiting.pop(hold_id, None)
            self.spool.done(hold_id)
            logger.warning("settlement of %s written after a retry", settlement.request_id)
        self.spool.forget_if_empty(len(self.waiting))
        return True

    async def close(self) -> None:
        """At shutdown: one more try; what is still waiting stays on disk for the next worker."""
        if self.retry_task is not None:
            self.retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.retry_task
        if self.waiting:
            await self.flush()


_settlers = PerEventLoop(lambda: Settler(get_store(), Spool(Path(settings.DOS_AI_SPOOL_DIR))))


def get_settler() -> Settler:
    return _settlers.get()


def existing_settler() -> Settler | None:
    return _settlers.existing()
