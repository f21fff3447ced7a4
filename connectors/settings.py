"""The settings of a connector service (``lienthong connector crm|acct``): ``ConnectorServiceSettings``.

(``ConnectorSettings`` in ``connectors/runner.py`` is what one ``Connector`` is built with, test knobs
included; ``connectors.service.build_connector`` makes it from these, in one place.)
"""

from __future__ import annotations

from pydantic import Field, model_validator

from amis.settings import (
    AmisSettings,
    ConnectorExtensionsSetting,
    LedgerDirSetting,
    LedgerTokenSetting,
    TokenRenewBeforeSetting,
)
from common.settings import DataDirSetting, KafkaSettings, ServiceSettings, WebHostSetting


class ConnectorServiceSettings(ServiceSettings):
    """A connector service."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    amis: AmisSettings = Field(default_factory=AmisSettings)
    data_dir: DataDirSetting
    ledger_dir: LedgerDirSetting
    web_host: WebHostSetting
    ledger_url: str | None = Field(
        None,
        description="The capture service's ledger API of the connector's system (e.g. http://capture-crm:8097): "
        "the connector keeps its writes, awaited callbacks and command ids there instead of in files of its own "
        "(LIENTHONG_LEDGER_DIR), so that replicas of it, on any node, can share its consumer group. Needs "
        "LIENTHONG_LEDGER_TOKEN. Unset: the local files, shared with capture on one host or volume.",
    )
    ledger_token: LedgerTokenSetting
    connector_concurrency: int = Field(8, ge=1, description="Commands in flight per tenant (per replica).")
    connector_rate: float = Field(
        50.0,
        gt=0,
        description="API requests per second per tenant, per replica: N replicas may send N times this to one "
        "tenant (size the replicas' maximum against the tenant's quota, docs/deploy.md).",
    )
    callback_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds an accounting proposal waits for ACT's callback before the connector pulls "
        "get_call_back_detail_error (and saves again if the result is not there).",
    )
    token_renew_before: TokenRenewBeforeSetting
    acct_branch_id: dict[str, str] = Field(
        default_factory=dict,
        description="tenant -> the ACT branch its proposals are booked to (the branch_id of a save voucher: "
        "the id of an organisation unit of type branch, get_dictionary data_type 6), e.g. "
        'LIENTHONG_ACCT_BRANCH_ID=\'{"cty-abc": "<guid>"}\'. A tenant not listed (unset: none): branch_id '
        "is omitted and ACT books the proposal to its default branch.",
    )
    connector_extensions: ConnectorExtensionsSetting
    crm_connector_port: int = Field(
        8093, ge=0, le=65535, description="Port of the CRM connector's /metrics, /healthz and /readyz."
    )
    acct_connector_port: int = Field(
        8094, ge=0, le=65535, description="Port of the accounting connector's /metrics, /healthz and /readyz."
    )

    @model_validator(mode="after")
    def _ledger_url_has_its_token(self) -> ConnectorServiceSettings:
        if self.ledger_url and (self.ledger_token is None or not self.ledger_token.get_secret_value()):
            raise ValueError(
                "LIENTHONG_LEDGER_URL is set but LIENTHONG_LEDGER_TOKEN is not: set the token the capture service has"
            )
        if self.ledger_url and not self.ledger_url.startswith(("http://", "https://")):
            raise ValueError(f"LIENTHONG_LEDGER_URL={self.ledger_url} is no http:// or https:// URL")
        return self
