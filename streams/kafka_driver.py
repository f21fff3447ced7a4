"""faust-streaming's aiokafka transport, with one fix: no message is skipped for good at start-up.

While a worker recovers its tables, faust's streams skip messages the consumer already fetched and
later "seek back to committed offsets" to read them again. aiokafka's ``seek_to_committed`` only
moves partitions that *have* a committed offset above 0, so a partition whose group never committed
(a worker killed before its first commit, a partition that received its first messages meanwhile)
stays where the skipped fetch left it: those messages are never processed. Seen here with
``kill -9`` of a worker and a restart (tests/integration/test_aggregates_durable.py).

The fix: a partition without a committed offset is sought to its beginning, which is what
``auto_offset_reset = earliest`` promises. Work redone this way is at-least-once redelivery, which
the processor deduplicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class AIOKafkaConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Mapping[Any, int]:
        return await self.call_thread(self._seek_to_committed_or_beginning)

    async def _seek_to_committed_or_beginning(self) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        never_committed = [tp for tp, offset in committed.items() if offset is None or offset <= 0]
        if never_committed:
            await consumer.seek_to_beginning(*never_committed)
        return committed


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def install(app: Any) -> None:
    """Give ``app`` this transport for consuming (producing is unchanged)."""
    app.transport = Transport(app.conf.broker_consumer, app)
