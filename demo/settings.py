"""The settings of ``lienthong demo``: ``DemoSettings``.

The demo starts everything, but configures most of it itself: its sandboxes, capture services and
connectors run in its process with the demo's own tenants, ports and directories. What it reads is
the broker to use (or start), the topics to create, where to keep its files, and what it shares with
the worker it starts as a process of its own (which reads its own settings, ``WorkerSettings``).
"""

from __future__ import annotations

from pydantic import Field

from common.settings import DataDirSetting, KafkaSettings, ServiceSettings
from sandboxes.settings import SandboxAdminTokenSetting
from streams.settings import (
    AppIdSetting,
    TopicPartitionsSetting,
    TopicReplicationFactorSetting,
    WebPortSetting,
)


class DemoSettings(ServiceSettings):
    """The demo.

    Everything on this machine, and a scripted business day.
    """

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    data_dir: DataDirSetting
    topic_partitions: TopicPartitionsSetting
    topic_replication_factor: TopicReplicationFactorSetting
    # the worker's, which the demo starts (under this app id, after the run's topic prefix) and whose
    # /readyz says when it is ready and /metrics its page reads
    app_id: AppIdSetting
    web_port: WebPortSetting  # the demo knows its worker is ready from its /readyz there (always served)
    # the demo's sandboxes' /sandbox/... routes
    sandbox_admin_token: SandboxAdminTokenSetting
