"""The settings of the operator's commands (``lienthong topics|lag|dlq|reconcile|backfill|history|explain|tenant|
dashboard|kafka``): ``OpsSettings``. Each command hands its parts the block they use: the Kafka
connection to every command, the AMIS APIs' to reconcile and backfill."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from amis.settings import AmisSettings, ConnectorExtensionsSetting
from common.settings import DataDirSetting, KafkaSettings, ServiceSettings, WebHostSetting
from streams.settings import DefaultOrderTargetSetting, TopicPartitionsSetting, TopicReplicationFactorSetting


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
    data_dir: DataDirSetting  # history's index (lienthong history, the operator's page)
    default_order_target: DefaultOrderTargetSetting  # whatif replays with the worker's
    connector_extensions: ConnectorExtensionsSetting  # whatif checks field mappings as the connectors write
    dashboard_token: SecretStr | None = Field(
        None,
        description="The operator's page (lienthong dashboard) needs it when set: opened once as /?token=<token> "
        "(exchanged for an HttpOnly cookie), or sent as 'Authorization: Bearer <token>'. /metrics and the probes "
        "do not. Never logged. Unset: the page is open to whoever reaches its port (SECURITY.md).",
    )
    dashboard_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the operator's page answers (the Host header, port left out), JSON, e.g. "
        '["ops.example.internal"]; always localhost, 127.0.0.1, ::1 and LIENTHONG_WEB_HOST. Any other Host '
        "is answered 421 (a DNS-rebinding page would send its own).",
    )

    @field_validator("dashboard_token")
    @classmethod
    def _dashboard_token_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "LIENTHONG_DASHBOARD_TOKEN must be at least 16 characters (e.g. python -c "
                "'import secrets; print(secrets.token_urlsafe(24))'), or unset"
            )
        return value
