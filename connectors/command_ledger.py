"""The connector's own ledger of command ids and how they ended, and the ``depends_on`` waits on it.

A repeat of an applied command is a ``duplicate`` (nothing is written again); a command that
names others in ``depends_on`` goes only once they are applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

from connectors.in_flight import Stopping
from streams.core.contract import Command


class CommandLedger:
    """Command ids and how they ended (applied / rejected / failed), durable (SQLite).

    Only ``applied`` makes a repeat a ``duplicate``: a failed or rejected command replayed from
    ``dlq.commands`` is tried again. A command depending on a rejected or failed one fails at once.
    """

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS applied (command_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "target_id TEXT, ts_ms INTEGER NOT NULL)"
        )

    def get(self, command_id: str) -> tuple[str, str | None] | None:
        row = self._db.execute("SELECT status, target_id FROM applied WHERE command_id=?", (command_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def record(self, command_id: str, status: str, target_id: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?)",
            (command_id, status, target_id, int(time.time() * 1000)),
        )

    def close(self) -> None:
        self._db.close()


class Dependencies:
    """``depends_on``: a command waits, at most ``timeout`` seconds, until the commands it names are
    applied in ``ledger``; each end recorded there (``recorded``) wakes the waiters to look again."""

    def __init__(self, ledger: CommandLedger, *, timeout: float, stopping: asyncio.Event) -> None:
        self.ledger = ledger
        self.timeout = timeout
        self._stopping = stopping
        self._applied = asyncio.Condition()

    async def recorded(self) -> None:
        """A command's end was recorded in the ledger."""
        async with self._applied:
            self._applied.notify_all()

    async def problem(self, command: Command) -> str | None:
        """None once every ``depends_on`` command is applied; else why this command cannot go."""
        deadline = time.monotonic() + self.timeout
        async with self._applied:
            while True:
                states = {d: self.ledger.get(d) for d in command.depends_on}
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
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 0.5)):
                        await self._applied.wait()
