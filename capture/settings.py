"""The settings of the capture services (``lienthong capture crm|acct``: ``CaptureSettings``) and of the
webhook receiver, a capture service of systems that send signed notifications (``lienthong webhooks``:
``WebhookSettings``)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from amis.settings import AmisSettings, LedgerDirSetting, LedgerTokenSetting, TokenRenewBeforeSetting
from common.settings import DataDirSetting, KafkaSettings, PublicHostSetting, ServiceSettings, WebHostSetting


class CaptureSettings(ServiceSettings):
    """A capture service."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    amis: AmisSettings = Field(default_factory=AmisSettings)
    data_dir: DataDirSetting
    ledger_dir: LedgerDirSetting
    web_host: WebHostSetting
    token_renew_before: TokenRenewBeforeSetting
    capture_poll_interval: float = Field(10.0, gt=0, description="Seconds between two polls of a capture service.")
    capture_overlap: float = Field(
        120.0,
        ge=0,
        description="Seconds of changes a poll reads again before its watermark (records skipped by a deletion "
        "during a scan; ACT's last_sync_time has whole seconds).",
    )
    capture_deletion_scan_every: int = Field(
        30, ge=1, description="CRM capture lists whole resources to notice deletions every this many polls."
    )
    capture_extensions: bool = Field(
        False,
        description="Also poll the sandboxes' extension resources (CRM quotes, invoice requests, price policies, "
        "categories; ACT price policies and item groups). Off against real tenants, which have none.",
    )
    capture_port: int = Field(
        8091,
        ge=0,
        le=65535,
        description="Port of the accounting capture service's /metrics, /healthz and /readyz (internal; bound to "
        "LIENTHONG_WEB_HOST).",
    )
    public_host: PublicHostSetting
    callback_port: int = Field(
        8095,
        ge=0,
        le=65535,
        description="Port of the accounting capture service's callback receiver (/callback, ACT's APICallBack; "
        "public, bound to LIENTHONG_PUBLIC_HOST): it serves nothing else.",
    )
    crm_capture_port: int = Field(
        8092, ge=0, le=65535, description="Port of the CRM capture service's /metrics, /healthz and /readyz."
    )
    ledger_token: LedgerTokenSetting
    crm_ledger_port: int = Field(
        8097,
        ge=0,
        le=65535,
        description="Port of the CRM capture service's ledger API (internal, bound to LIENTHONG_WEB_HOST; served "
        "only when LIENTHONG_LEDGER_TOKEN is set): the CRM connector replicas' LIENTHONG_LEDGER_URL.",
    )
    acct_ledger_port: int = Field(
        8098,
        ge=0,
        le=65535,
        description="Port of the accounting capture service's ledger API (internal, bound to LIENTHONG_WEB_HOST; "
        "served only when LIENTHONG_LEDGER_TOKEN is set): the accounting connector replicas' LIENTHONG_LEDGER_URL.",
    )


class WebhookSettings(ServiceSettings):
    """The webhook receiver."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    data_dir: DataDirSetting  # the versions of records taken, which make a replayed webhook change nothing
    web_host: WebHostSetting
    public_host: PublicHostSetting
    webhook_port: int = Field(
        8090,
        ge=0,
        le=65535,
        description="Port of the webhook receiver's /webhooks/<system>/<tenant> (public, bound to "
        "LIENTHONG_PUBLIC_HOST; lienthong webhooks --port overrides it): it serves nothing else.",
    )
    webhook_metrics_port: int = Field(
        8096,
        ge=0,
        le=65535,
        description="Port of the webhook receiver's /metrics, /healthz and /readyz (internal; bound to "
        "LIENTHONG_WEB_HOST).",
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="'<system>:<tenant>' -> HMAC secret; never logged."
    )
