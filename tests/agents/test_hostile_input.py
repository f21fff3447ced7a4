"""Hostile input through the processing loop: any message is decided or dead-lettered whole, and the
loop goes on.

Batches of hostile messages (tests/core/test_fuzz.py's generators: any bytes, broken and hostile
change events, Debezium envelopes with any headers) are routed and decided by the real loop. Every
message the edge refuses is on ``dlq.cdc`` with its original key and bytes and the same
``error.kind``; every one it accepts is audited, dropped as a duplicate, or dead-lettered because what
it would write cannot be written; the loop never stops.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.contract import decode_change_event
from streams.core.errors import BadInput
from tests.agents.conftest import put, sent
from tests.core.test_fuzz import CRASHED, change_events, systems

hostile = st.one_of(
    change_events().map(lambda case: (f"cdc.{case[1]}.{case[2]}", case[3], case[0], case[4])),
    st.tuples(
        st.builds(lambda s, e: f"cdc.{s}.{e}", systems, st.sampled_from(["customer", "receipt"])),
        st.none() | st.binary(max_size=10),
        st.binary(max_size=200),
        st.none(),
    ),
)


@st.composite
def good(draw) -> tuple[str, bytes, bytes, None]:
    """Well-formed changes among the hostile ones, so that both paths of the loop are exercised."""
    record_id = draw(st.text(alphabet="ABCXYZ0123456789", min_size=1, max_size=6))
    entity, after = draw(st.sampled_from([
        ("customer", {"id": record_id, "code": f"KH{record_id}", "name": "ABC"}),
        ("receipt", {"id": record_id, "order_id": "AO1", "amount": "40"}),
        ("sale_order", {"id": record_id, "code": f"DH{record_id}", "crm_id": "O1", "total_amount": "100"}),
    ]))  # fmt: skip
    event = {"schema_version": 1, "event_id": f"g-{draw(st.integers(0, 10**9))}", "tenant": "t1", "system": "acct",
             "entity": entity, "op": "c", "ts_ms": 1, "before": None, "after": after}  # fmt: skip
    return f"cdc.acct.{entity}", f"t1:{record_id}".encode(), orjson.dumps(event), None


messages = st.one_of(hostile, good())


def test_every_message_is_decided_or_dead_lettered_whole(world, worker) -> None:
    corpus: list[tuple[str, bytes | None, bytes | None, dict | None]] = []

    @settings(
        max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
    )
    @given(message=messages)
    def collect(message) -> None:
        corpus.append(message)

    collect()  # hypothesis draws the messages; the loop takes them in one go (a worker per example is too slow)
    # and the inputs that once made internal dead letters (a list or object where a rule reads a state)
    corpus += [(f"cdc.{system}.{entity}", key, raw, headers) for raw, system, entity, key, headers in CRASHED]
    # a topic outside the contract (cdc.crm.contract) is one the processor never subscribes to
    corpus = [message for message in corpus if message[0] in world.partitions]
    assert len(corpus) >= 800
    for topic, key, value, headers in corpus:
        put(world, topic, key, value, list((headers or {}).items()) or None)
    worker.run(rounds=50)
    letters = [(r.key, r.value, dict(r.headers)["error.kind"]) for r in world.records("dlq.cdc")]
    # hostile input is bad input, said as such (schema, decode, key …): an internal dead letter is a bug
    internal = [(key, value[:80]) for key, value, kind in letters if kind == b"internal"]
    assert not internal, internal
    audit_ids = {audit["event_id"].split(":moved-from:")[0] for _, audit in sent(world, "audit.sync")}
    seen: set[tuple[str, str]] = set()
    refused = accepted = 0
    for topic, key, value, headers in corpus:
        system, _, entity = topic.removeprefix("cdc.").partition(".")
        if value is None:
            continue  # a tombstone: not a change
        try:
            change = decode_change_event(value, topic_system=system, topic_entity=entity, topic=topic,
                                         headers=headers, key=key)  # fmt: skip
        except BadInput as bad:
            assert (key, value, bad.kind.encode()) in letters, (topic, key, value[:80], bad.kind)
            refused += 1
            continue
        record = (f"{change.tenant}:{change.system}:{change.entity}:{change.record_id}", change.event_id)
        decided = change.event_id in audit_ids or record in seen
        written_off = any(k == key and v == value for k, v, _kind in letters)
        assert decided or written_off, (topic, key, value[:80])
        seen.add(record)
        accepted += 1
    assert refused and accepted, (refused, accepted)  # both paths were exercised
    assert not worker.stopped
