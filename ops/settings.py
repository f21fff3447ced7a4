"""The settings of the operator's commands (``lienthong topics|lag|dlq|reconcile|backfill|explain|tenant|
dashboard|kafka``): ``OpsSettings``. Each command hands its parts the block they use: the Kafka
connection to every command, the AMIS APIs' to reconcile and backfill."""

from __future__ import annotations

from pydantic import Field

from amis.settings import AmisSettings
from common.settings import KafkaSettings, ServiceSettings, WebHostSetting
from streams.settings import TopicPartitionsSetting, TopicReplicationFactorSetting


class OpsSettings(ServiceSettings):
    """The operator's commands.

    Topics, lag, dead letters, reconcile, backfill, a record's audit trail, tenant settings, the
    operator's page and the local broker.
    """

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    amis: AmisSettings = Field(default_factory=AmisSettings)
    topic_partitions: TopicPartitionsSetting
    topic_replication_factor: TopicReplicationFactorSetting
    web_host: WebHostSetting
