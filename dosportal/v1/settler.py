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

The disk is a second copy, never the only one (issue 21):

- A settlement is put in the retry queue in memory before the disk is touched, so a spool
  that cannot be written (a read-only or full disk, a directory the worker may not write)
  loses nothing while the worker lives: the failure is logged at ERROR and counted
  (`dos_ai_spool_write_failures_total`), the settlement is retried from memory, and its
  write to the spool is tried again on every retry pass. /healthz reports such a spool.
- A spool file is created under a name no adopter looks at, locked, and only then renamed
  to its `settle-*.jsonl` name, so no other worker can see it unlocked and take it for a
  dead worker's.
- An adopted file is removed only once each of its settlements is fsynced in the adopter's
  own spool (or already written to the database); until then it stays where it is.
- A settlement the database refuses (not an outage: a constraint, a bug) does not stop the
  pass: it is logged at ERROR, counted (`dos_ai_settlements_refused_total`), marked in the
  spool so `balance` can name its hold, kept for later passes, and the ones behind it are
  written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from billing.settlement import Settlement
from dosportal import metrics
from dosportal.v1.loops import PerEventLoop
from dosportal.v1.store import Store, StoreUnavailable, get_store

logger = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.25
# A retry costs one statement (or, while the database is down, one refused connection): a
# settlement is written at most this long after PostgreSQL is back.
LAST_RETRY_SECONDS = 2.0
SPOOL_GLOB = "settle-{tag}-*.jsonl"


def database_tag() -> str:
    database = settings.DATABASES["default"]
    identity = f"{database.get('HOST')}:{database.get('PORT')}/{database.get('NAME')}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


class Spool:
    """This worker's append-only file of settlements that are waiting for the database.

    Every method that writes raises OSError when the disk refuses; the settler keeps the
    settlement in memory whatever the disk says (see the module's docstring)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.tag = database_tag()
        self.fd: int | None = None
        self.path: Path | None = None

    def _open(self) -> int:
        if self.fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"settle-{self.tag}-{os.getpid()}-{id(self)}.jsonl"
            # Created under a name adopters do not look at, locked, then renamed: a file with a
            # spool name is always either locked by its live worker or a dead worker's.
            creating = self.directory / f".{name}.new"
            fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.rename(creating, self.directory / name)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    creating.unlink()
                raise
            self.fd, self.path = fd, self.directory / name
        return self.fd

    def _write(self, line: dict[str, object]) -> None:
        fd = self._open()
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to the spool ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except OSError:
            # A line half written (a full disk) would spoil the next one: cut it off again.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise

    def keep(self, settlement: Settlement) -> None:
        self._write({"keep": settlement.to_json()})

    def done(self, hold_id: int) -> None:
        self._write({"done": hold_id})

    def refused(self, settlement: Settlement, error: BaseException) -> None:
        """A note for `balance` (billing): this hold's settlement waits because the database
        refused it, not because it is down."""
        self._write({"refused": settlement.hold_id, "user_id": settlement.user_id, "error": repr(error)[:500]})

    def forget_if_empty(self, pending: int) -> None:
        """Once nothing is waiting, start a fresh file (the old one only says what was done)."""
        if pending == 0 and self.fd is not None and self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd, self.path = None, None

    def adopt_orphans(self, take: Callable[[list[Settlement]], bool]) -> None:
        """Hand the settlements left in each dead worker's file of this database to `take`,
        which answers whether they are safe elsewhere (fsynced in this spool, or written);
        only then is that file removed. A file whose lock is held belongs to a live worker."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(SPOOL_GLOB.format(tag=self.tag))):
            if path == self.path:
                continue
            try:
                self._adopt(path, take)
            except FileNotFoundError:
                continue  # adopted and removed by another worker meanwhile
            except OSError as error:  # this file only (another user's, a read-only directory)
                logger.error("cannot adopt the settlement spool file %s: %r", path, error)

    @staticmethod
    def _adopt(path: Path, take: Callable[[list[Settlement]], bool]) -> None:
        with path.open("r", encoding="utf-8") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its worker is alive and will write these itself
            if not _still_named(file.fileno(), path):
                return  # another worker adopted and removed it between our open and lock
            if take(read_waiting(file.read().splitlines())):
                path.unlink()


def _still_named(fd: int, path: Path) -> bool:
    """The open file `fd` is still the one called `path` (not removed, nor replaced)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


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


def spooled(directory: Path) -> tuple[list[Settlement], set[int]]:
    """What every worker's spool of this database keeps waiting, and the holds among them
    whose settlement the database refused (for `balance`: read only, without locks)."""
    waiting: list[Settlement] = []
    refused: set[int] = set()
    if not directory.is_dir():
        return waiting, refused
    for path in sorted(directory.glob(SPOOL_GLOB.format(tag=database_tag()))):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, PermissionError):
            continue  # written meanwhile (and removed), or another user's
        waiting.extend(read_waiting(lines))
        for line in lines:
            with contextlib.suppress(ValueError, TypeError, KeyError):  # not a "refused" line
                refused.add(int(json.loads(line)["refused"]))
    return waiting, refused & {settlement.hold_id for settlement in waiting}


class Settler:
    def __init__(self, store: Store, spool: Spool):
        self.store = store
        self.spool = spool
        self.waiting: dict[int, Settlement] = {}
        self.unspooled: set[int] = set()  # waiting in memory only: the spool could not be written
        self.refused: set[int] = set()  # refused by the database (reported once each)
        self.written: set[int] = set()  # written by a retry: what an orphan file may still list
        self.retry_task: asyncio.Task[None] | None = None
        self.adopted = False

    def adopt(self) -> None:
        """Take over the spool files of dead workers (at start-up, and on every retry pass)."""
        self.adopted = True
        self._adopt_orphans()

    def _adopt_orphans(self) -> None:
        try:
            self.spool.adopt_orphans(self._take)
        except OSError as error:
            self._disk_failed("adopt", error)

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
        except Exception as error:  # noqa: BLE001 - reported and kept, never lost
            # Not an outage: a settlement the database refuses. Inputs are bounded so this should
            # not happen; if it does, the call was still served, so keep it (and say so loudly)
            # rather than answer 500 — `balance` reports its hold until an operator looks.
            self._keep(settlement)
            self._refused(settlement, error)
            return False

    def _keep(self, settlement: Settlement) -> None:
        logger.warning("settlement of %s kept for retry", settlement.request_id)
        self._wait_for_database([settlement])

    def _take(self, settlements: list[Settlement]) -> bool:
        """A dead worker's settlements, into this worker's care; True when all are safe here."""
        settlements = [settlement for settlement in settlements if settlement.hold_id not in self.written]
        for settlement in settlements:
            logger.warning("replaying the settlement of %s from a dead worker's spool", settlement.request_id)
        return self._wait_for_database(settlements)

    def _wait_for_database(self, settlements: list[Settlement]) -> bool:
        """Into the retry queue in memory first — nothing the disk does can lose it then — and
        into this worker's spool; True when the spool took them all."""
        for settlement in settlements:
            self.waiting[settlement.hold_id] = settlement
            self.unspooled.add(settlement.hold_id)
        if settlements:
            self._start_retrying()
        self._spool_waiting()
        return not any(settlement.hold_id in self.unspooled for settlement in settlements)

    def _spool_waiting(self) -> None:
        """Write what waits in memory only to the spool (stopping at the first disk error)."""
        for hold_id in sorted(self.unspooled):
            settlement = self.waiting.get(hold_id)
            if settlement is not None:
                try:
                    self.spool.keep(settlement)
                except OSError as error:
                    self._disk_failed("keep", error, settlement)
                    return
            self.unspooled.discard(hold_id)

    def _disk_failed(self, operation: str, error: OSError, settlement: Settlement | None = None) -> None:
        metrics.spool_write_failed(operation)
        subject = f" of {settlement.request_id}" if settlement is not None else ""
        logger.error(
            "settlement spool %s: %s%s failed (%r); settlements wait in this worker's memory only",
            self.spool.directory, operation, subject, error,
        )  # fmt: skip

    def _refused(self, settlement: Settlement, error: BaseException) -> None:
        if settlement.hold_id in self.refused:
            logger.warning("settlement of %s refused by the database again: %r", settlement.request_id, error)
            return
        self.refused.add(settlement.hold_id)
        metrics.settlement_refused()
        logger.error(
            "settlement of %s (hold %s) refused by the database; kept for retry, the others are written",
            settlement.request_id, settlement.hold_id, exc_info=error,
        )  # fmt: skip
        try:
            self.spool.refused(settlement, error)
        except OSError as disk_error:
            self._disk_failed("refused", disk_error, settlement)

    def _start_retrying(self) -> None:
        if self.retry_task is None or self.retry_task.done():
            self.retry_task = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        pause = FIRST_RETRY_SECONDS
        while self.waiting:
            await asyncio.sleep(pause)
            self._adopt_orphans()
            self._spool_waiting()
            pause = FIRST_RETRY_SECONDS if await self.flush() else min(LAST_RETRY_SECONDS, pause * 2)

    async def flush(self) -> bool:
        """One pass over what is waiting; True when everything was written. An outage ends the
        pass; a settlement the database refuses is reported and passed over, so the ones
        behind it are still written."""
        for hold_id, settlement in list(self.waiting.items()):
            metrics.settlement_retry()
            try:
                await self.store.settle(settlement)
            except StoreUnavailable:
                return False
            except Exception as error:  # noqa: BLE001 - reported; the rest of the pass goes on
                self._refused(settlement, error)
                continue
            self.waiting.pop(hold_id, None)
            self.unspooled.discard(hold_id)
            self.refused.discard(hold_id)
            self.written.add(hold_id)
            try:
                self.spool.done(hold_id)
            except OSError as error:  # harmless: writing it again would find its hold gone
                self._disk_failed("done", error, settlement)
            logger.warning("settlement of %s written after a retry", settlement.request_id)
        self.spool.forget_if_empty(len(self.waiting))
        return not self.waiting

    async def close(self) -> None:
        """At shutdown: one more try; what is still waiting stays on disk for the next worker."""
        if self.retry_task is not None:
            self.retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.retry_task
        if self.waiting:
            self._spool_waiting()
            await self.flush()
        for hold_id in sorted(self.unspooled & set(self.waiting)):
            logger.error(
                "settlement of %s lost at shutdown: the database and the spool both refused it; "
                "release_stale_holds will free hold %s",
                self.waiting[hold_id].request_id, hold_id,
            )  # fmt: skip


_settlers = PerEventLoop(lambda: Settler(get_store(), Spool(Path(settings.DOS_AI_SPOOL_DIR))))


def get_settler() -> Settler:
    return _settlers.get()


def existing_settler() -> Settler | None:
    return _settlers.existing()
