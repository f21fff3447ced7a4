"""Which offsets a connector commits: never past a command not done, and the partition's end (past the
transaction markers the worker's commits leave) once every command it took is done."""

from __future__ import annotations

from types import SimpleNamespace

from connectors.in_flight import InFlight


def message(offset: int, key: bytes = b"k"):
    return SimpleNamespace(topic=lambda: "commands.crm", partition=lambda: 0, offset=lambda: offset, key=lambda: key)


async def test_a_partition_read_to_its_end_is_committed_at_its_end_once_all_it_took_is_done():
    in_flight = InFlight()

    async def done(_message) -> bool:
        return True

    # commands at offsets 0 and 2 (1 and 3 are the markers of the two transactions that wrote them)
    in_flight.start(message(0, b"a"), done)
    in_flight.start(message(2, b"b"), done)
    in_flight.reached_end("commands.crm", 0, 4)
    await in_flight.finish()
    ((committed,),) = [in_flight.to_commit()]
    assert (committed.topic, committed.partition, committed.offset) == ("commands.crm", 0, 4)


async def test_a_command_not_done_holds_the_commit_before_it_whatever_the_end():
    in_flight = InFlight()

    async def done(_message) -> bool:
        return True

    async def not_done(_message) -> bool:
        return False

    in_flight.start(message(0, b"a"), done)
    in_flight.start(message(2, b"b"), not_done)
    in_flight.reached_end("commands.crm", 0, 4)
    await in_flight.finish()
    ((committed,),) = [in_flight.to_commit()]
    assert committed.offset == 2
