"""The server's background delivery task: each worker process sends due webhooks itself.

Started by the ASGI lifespan (dosportal.asgi) in every uvicorn worker, it asks the outbox
every DOS_AI_WEBHOOKS_POLL_SECONDS (one indexed query) and sends what is due in a worker
thread, so neither /v1 nor a page ever waits on a receiver. Several processes share the work
safely (webhooks.delivery claims with SKIP LOCKED). `manage.py deliver_webhooks` from cron is
the catch-up for deployments that turn this off (DOS_AI_WEBHOOKS_WORKER=0) or stop serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger("webhooks.worker")

_task: asyncio.Task[None] | None = None


def _run_once() -> None:
    from webhooks.delivery import deliver_due

    try:
        deliver_due()
    finally:
        close_old_connections()


async def _loop() -> None:
    failing = False
    while True:
        try:
            await sync_to_async(_run_once, thread_sensitive=False)()
            if failing:
                logger.warning("webhook delivery works again")
            failing = False
        except Exception:
            # Logged once per outage, not once per poll: the database may be down for a while.
            if not failing:
                logger.warning("webhook delivery failed; retrying every poll", exc_info=True)
            failing = True
        await asyncio.sleep(settings.DOS_AI_WEBHOOKS_POLL_SECONDS)


def start() -> None:
    global _task
    if settings.DOS_AI_WEBHOOKS_WORKER and _task is None:
        _task = asyncio.get_running_loop().create_task(_loop(), name="webhook-delivery")


async def stop() -> None:
    global _task
    if _task is not None:
        _task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _task
        _task = None
