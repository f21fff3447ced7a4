"""What the two capture services share: a poll now and every ``poll_interval`` until stopped, and a
passing fault of one poll's part logged and left for the next poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from amis.errors import Refused, Transient
from common.logs import about

log = logging.getLogger(__name__)


class PollingCapture:
    """A capture service's loop: ``poll_all`` (the service's own), then wait ``poll_interval``."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.poll_all()
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see connectors/runner.py
                async with asyncio.timeout(self.poll_interval):
                    await self._stopping.wait()

    async def poll_all(self) -> None:
        raise NotImplementedError


@contextlib.contextmanager
def tried_again_next_poll(what: str, *, tenant: str, entity: str | None = None) -> Iterator[None]:
    """A passing fault or a refusal of the API while polling ``what``: logged; the rest of the poll
    goes on, and the next poll reads it again (the watermark did not move)."""
    try:
        yield
    except (Transient, Refused) as exc:
        log.warning("%s: %s; tried again next poll", what, exc, extra=about(tenant=tenant, entity=entity))
