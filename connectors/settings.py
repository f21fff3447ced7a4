"""The settings of a connector service (``lienthong connector crm|acct``): ``ConnectorServiceSettings``.

(``ConnectorSettings`` in ``connectors/runner.py`` is what one ``Connector`` is built with, test knobs
included; ``connectors.service.build_connector`` makes it from these, in one place.)
"""

from __future__ import annotations

from pydantic import Field

from amis.settings import AmisSettings, ConnectorExtensionsSetting, LedgerDirSetting, TokenRenewBeforeSetting
from common.settings import DataDirSetting, KafkaSettings, ServiceSettings, WebHostSetting


class ConnectorServiceSettings(ServiceSettings):
    """A connector service."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    amis: AmisSettings = Field(default_factory=AmisSettings)
    data_dir: DataDirSetting
    ledger_dir: LedgerDirSetting
    web_host: WebHostSetting
    connector_concurrency: int = Field(8, ge=1, description="Commands in flight per tenant.")
    connector_rate: float = Field(50.0, gt=0, description="API requests per second per tenant.")
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
