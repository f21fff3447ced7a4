"""After a rebalance a worker decides nothing until its global tables have read their changelogs.

A worker that joins reads the global tables as faust standbys, which faust starts only after the
agents resume: without this wait, its first decisions would see links other workers wrote as
missing (docs/reliability.md, finding 3).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from faust.types import TP

from streams.tables.catch_up import GlobalTablesCatchUp


@dataclass
class GlobalCopy:
    name: str
    read_until: int = 0

    def changelog_tp(self) -> TP:
        return TP(f"app-{self.name}-changelog", 0)

    others_read: int = 0

    def changelog_read_until(self) -> int:
        return self.read_until

    def others_unread(self, end: int) -> int:
        return max(0, end - self.read_until)

    def reads(self, until: int) -> None:
        """The standby reader applies other workers' messages up to ``until``."""
        self.others_read += until - self.read_until
        self.read_until = until


def ends_of(**ends: int):
    asked = []

    async def end_offsets(tps):
        asked.append(list(tps))
        return {TP(f"app-{name}-changelog", 0): end for name, end in ends.items()}

    return end_offsets, asked


async def test_a_batch_after_a_rebalance_waits_until_every_global_table_read_its_changelog_end():
    links, written = GlobalCopy("links", 3), GlobalCopy("written", 10)
    end_offsets, _ = ends_of(links=8, written=10)
    catch_up = GlobalTablesCatchUp([links, written], end_offsets, max_wait=10)
    catch_up.rebalanced()
    waiting = asyncio.ensure_future(catch_up.wait())
    await asyncio.sleep(0.2)
    assert not waiting.done(), "decided while links had read 3 of 8"
    links.read_until = 8  # the standby reader applied the rest
    await asyncio.wait_for(waiting, 1)


async def test_without_a_rebalance_or_once_caught_up_a_batch_does_not_wait_nor_ask_the_broker():
    end_offsets, asked = ends_of(links=5)
    links = GlobalCopy("links", 5)
    catch_up = GlobalTablesCatchUp([links], end_offsets, max_wait=10)
    await asyncio.wait_for(catch_up.wait(), 0.1)
    assert asked == []
    catch_up.rebalanced()
    await asyncio.wait_for(catch_up.wait(), 1)
    await asyncio.wait_for(catch_up.wait(), 0.1)
    assert len(asked) == 1, "the end offsets are read once per rebalance"


async def test_every_agent_waits_for_the_same_catch_up():
    links = GlobalCopy("links", 0)
    end_offsets, asked = ends_of(links=2)
    catch_up = GlobalTablesCatchUp([links], end_offsets, max_wait=10)
    catch_up.rebalanced()
    agents = [asyncio.ensure_future(catch_up.wait()) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert not any(agent.done() for agent in agents)
    links.read_until = 2
    await asyncio.wait_for(asyncio.gather(*agents), 1)
    assert len(asked) == 1


async def test_a_table_that_cannot_catch_up_in_time_is_decided_with_what_is_known_and_said(caplog):
    links = GlobalCopy("links", 1)
    end_offsets, _ = ends_of(links=1000)
    catch_up = GlobalTablesCatchUp([links], end_offsets, max_wait=0.3)
    catch_up.rebalanced()
    with caplog.at_level("WARNING"):
        await asyncio.wait_for(catch_up.wait(), 2)
    assert "links: 999 unread" in caplog.text
    assert "LIENTHONG_GLOBAL_TABLES_MAX_WAIT" in caplog.text


async def test_a_broker_that_does_not_answer_does_not_stop_the_worker(caplog):
    async def unreachable(tps):
        await asyncio.sleep(10)

    catch_up = GlobalTablesCatchUp([GlobalCopy("links")], unreachable, max_wait=0.2)
    catch_up.rebalanced()
    with caplog.at_level("WARNING"):
        await asyncio.wait_for(catch_up.wait(), 2)
    assert "end offsets unknown" in caplog.text


async def test_a_batch_that_rests_on_an_absence_is_decided_again_only_if_other_workers_writes_were_unread():
    links, written = GlobalCopy("links", 4), GlobalCopy("written", 9)
    end_offsets, asked = ends_of(links=4, written=9)
    catch_up = GlobalTablesCatchUp([links, written], end_offsets, max_wait=10)
    assert await asyncio.wait_for(catch_up.read_others_writes(), 0.5) is False, "nothing it had not read"
    assert len(asked) == 1

    end_offsets, _ = ends_of(links=6, written=9)
    catch_up = GlobalTablesCatchUp([links, written], end_offsets, max_wait=10)
    reading = asyncio.ensure_future(catch_up.read_others_writes())
    await asyncio.sleep(0.1)
    assert not reading.done(), "went on with two of another worker's links unread"
    links.reads(6)
    assert await asyncio.wait_for(reading, 0.5) is True, "read them: decide again"


async def test_reading_other_workers_writes_gives_up_after_the_maximum_wait_and_says_what_is_unread(caplog):
    links = GlobalCopy("links", 1)
    end_offsets, _ = ends_of(links=3)
    catch_up = GlobalTablesCatchUp([links], end_offsets, max_wait=0.2)
    assert await asyncio.wait_for(catch_up.read_others_writes(), 2) is False
    assert "links: 2 unread" in caplog.text
