"""Producing with confluent-kafka from asyncio, waiting until the broker acknowledged the message."""

from __future__ import annotations

import asyncio
import time

from confluent_kafka import Producer


async def produce_acknowledged(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list | None = None,
    timeout: float = 30.0,
) -> None:
    """Produce one message; return once the broker has it. Raises RuntimeError on a delivery error
    and TimeoutError when no acknowledgement came within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    delivered: asyncio.Future = loop.create_future()

    def on_delivery(err, _msg) -> None:
        def settle() -> None:
            if not delivered.done():
                delivered.set_exception(RuntimeError(str(err))) if err else delivered.set_result(None)

        loop.call_soon_threadsafe(settle)

    producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
    deadline = time.monotonic() + timeout
    while not delivered.done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no acknowledgement for a message to {topic} within {timeout:g}s")
        await asyncio.to_thread(producer.poll, 0.05)
    await delivered
