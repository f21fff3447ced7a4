"""The worker's settings (``lienthong worker``): ``WorkerSettings``, read once by ``streams.app.create_app``
or the command line (``common/settings.py`` says how the settings of the services are laid out).

Also the definitions of the variables the demo and the operator's commands read alike with the worker
(the app id, the topics' partitions and replication, the worker's HTTP port), so each has one type and
default.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from common.settings import DataDirSetting, EnvSettings, KafkaSettings, ServiceSettings, WebHostSetting
from streams.core.rules import OrderTarget

#: LIENTHONG_APP_ID
AppIdSetting = Annotated[
    str, Field("lienthong", description="Faust app id: consumer group and table changelog prefix.")
]
#: LIENTHONG_TOPIC_PARTITIONS
TopicPartitionsSetting = Annotated[int, Field(6, ge=1, description="Partitions of every topic the project creates.")]
#: LIENTHONG_TOPIC_REPLICATION_FACTOR
TopicReplicationFactorSetting = Annotated[
    int, Field(1, ge=1, description="Replication factor of every topic the project creates.")
]
#: LIENTHONG_WEB_ENABLED
WebEnabledSetting = Annotated[
    bool, Field(True, description="Serve the worker's /metrics, /healthz and /readyz (docs/operations.md).")
]
#: LIENTHONG_WEB_PORT
WebPortSetting = Annotated[
    int, Field(6066, ge=0, le=65535, description="Port of the worker's /metrics, /healthz and /readyz.")
]


#: LIENTHONG_DEFAULT_ORDER_TARGET (the worker decides with it; whatif replays with it)
DefaultOrderTargetSetting = Annotated[
    OrderTarget,
    Field("sale_order", description="What a CRM order becomes in accounting when the tenant has no setting."),
]


class TableSettings(EnvSettings):
    """The worker's tables.

    Where and in how much memory the worker keeps them (``streams.tables.define_tables``).
    """

    store: str = Field("rocksdb://", description="Faust table store: rocksdb:// (durable) or memory:// (tests).")
    data_dir: DataDirSetting
    rocksdb_memtables_mb: int = Field(
        32,
        ge=4,
        description="Memory for recent table writes not yet on disk (RocksDB memtables), in MB, shared by "
        "every table and partition of a worker (docs/state.md, 'Memory').",
    )
    rocksdb_block_cache_mb: int = Field(
        32,
        ge=1,
        description="Read cache of the tables (RocksDB block cache), in MB, shared by every table and "
        "partition of a worker (docs/state.md, 'Memory').",
    )


class WorkerSettings(ServiceSettings):
    """The worker (stream processor)."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    tables: TableSettings = Field(default_factory=TableSettings)
    app_id: AppIdSetting
    topic_partitions: TopicPartitionsSetting
    topic_replication_factor: TopicReplicationFactorSetting
    consumer_fetch_kb: int = Field(
        256,
        ge=64,
        description="What the worker's consumer fetches ahead per partition, in KB (faust's consumer_max_fetch_size): "
        "the read-ahead a worker holds in memory is about this times its partitions (docs/state.md, 'Memory').",
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        description="glibc malloc arenas of the worker (0: glibc's default of 8 per core); few arenas keep the "
        "memory RocksDB's and the Kafka clients' threads free from growing (docs/state.md, 'Memory').",
    )
    order_max_wait: float = Field(
        30.0,
        gt=0,
        description="Longest a change whose decision rests on an absent record (not linked yet, not in the "
        "target yet) is held for every input to pass the moment it reached Kafka (docs/state.md); past it, it "
        "is decided with what is known, with a warning.",
    )
    transaction_timeout: float = Field(
        60.0,
        ge=1,
        description="Seconds a batch's transaction may take, a broker outage included (longer, and the batch is "
        "aborted and read again), and the broker gives a worker's open transaction before it aborts it: how "
        "long the unfinished batch of a worker killed without LIENTHONG_GROUP_INSTANCE_ID may hold back "
        "read_committed readers (a worker restarted under the same instance id ends it at once).",
    )
    web_enabled: WebEnabledSetting
    web_port: WebPortSetting
    web_host: WebHostSetting
    group_instance_id: str | None = Field(
        None,
        description="A stable name of this worker in its consumer group (static membership, e.g. the pod name of "
        "a StatefulSet): a worker restarted under the same name gets its partitions back at once instead of "
        "after the session timeout. Unset: a new member each start.",
    )
    session_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds without a heartbeat before the group drops a worker and gives its "
        "partitions to the others (a killed worker's partitions wait this long).",
    )
    batch_size: int = Field(
        1000, ge=1, le=4096, description="Most messages the processing loop takes in one batch (one transaction)."
    )
    max_message_bytes: int = Field(
        1_000_000,
        ge=10_000,
        description="Largest message the processor writes (the broker's max.message.bytes or less); an event "
        "whose outputs or state would be larger is dead-lettered (error.kind too_large).",
    )
    delivery_timeout: float = Field(
        300.0, gt=0, description="Seconds the producer keeps retrying a message before the worker gives up and stops."
    )
    default_order_target: DefaultOrderTargetSetting
