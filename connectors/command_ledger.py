"""The ``depends_on`` waits on the connector's ledger of command ids (``amis.ledger.CommandLedger``,
reached through ``ConnectorLedger``: a local file or the capture service's ledger API).

A repeat of an applied command is a ``duplicate`` (nothing is written again); a command that
names others in ``depends_on`` goes only once they are applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from amis.ledger import CommandLedger, ConnectorLedger
from connectors.in_flight import Stopping
from streams.core.contract import Command

__all__ = ["CommandLedger", "Dependencies"]


class Dependencies:
    """``depends_on``: a command waits, at most ``timeout`` seconds, until the commands it names are
    applied in ``ledger``; each end recorded by this connector (``recorded``) wakes the waiters to look
    again. When other replicas of the group record commands in the same ledger
    (``ledger.shared_by_replicas``: the capture service's ledger API), a dependency may be applied by
    another replica, which wakes nobody here: the waiters also look again every ``recheck`` seconds."""

    def __init__(
        self, ledger: ConnectorLedger, *, timeout: float, stopping: asyncio.Event, recheck: float | None = None
    ) -> None:
        self.ledger = ledger
        self.timeout = timeout
        self._stopping = stopping
        self.recheck = recheck if recheck is not None else (0.2 if ledger.shared_by_replicas else 0.5)
        self._applied = asyncio.Condition()
        self._records = 0  # ends recorded so far: a record made while the states were read is not missed

    async def recorded(self) -> None:
        """A command's end was recorded in the ledger."""
        async with self._applied:
            self._records += 1
            self._applied.notify_all()

    async def problem(self, command: Command) -> str | None:
        """None once every ``depends_on`` command is applied; else why this command cannot go."""
        deadline = time.monotonic() + self.timeout
        while True:
            seen = self._records
            states = {d: await self.ledger.command_state(d) for d in command.depends_on}
            refused = [(d, state[0]) for d, state in states.items() if state and state[0] in ("rejected", "failed")]
            if refused:
                return f"depends_on {[d for d, _ in refused]} was {refused[0][1]}: this command is not applied"
            if all(state and state[0] == "applied" for state in states.values()):
                return None
            if self._stopping.is_set():
                raise Stopping()  # the dependency may be among what this run no longer takes
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"depends_on {[d for d, s in states.items() if not s]} not applied within {self.timeout:g}s"
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives as
            # the waited event happens, and the task would go on after being cancelled
            async with self._applied:
                if self._records != seen:
                    continue  # recorded while the states were read (read outside the lock: they may be remote)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, self.recheck)):
                        await self._applied.wait()
