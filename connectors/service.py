"""``lienthong connector crm|acct``: a ``Connector`` put together from the connector service's settings.

``build_connector`` is the one place the settings become a connector's: the command line and the
demo both build theirs with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from amis.credentials import acct_app_id, acct_credentials, crm_credentials, shared_ledger_path
from common.kafka_config import confluent_config
from common.names import System
from connectors.runner import Connector, ConnectorSettings
from connectors.settings import ConnectorServiceSettings


def build_connector(settings: ConnectorServiceSettings, system: System, **overrides: Any) -> Connector:
    """The connector of ``system``; ``overrides``: ``ConnectorSettings`` fields that
    are no setting of the service (the tests' backoff, the demo's connectors that serve no probes)."""
    ledger_dir = settings.data_dir / "connectors"
    if not settings.ledger_url:  # else the ledger is the capture service's (LIENTHONG_LEDGER_URL): no file here
        ledger_dir.mkdir(parents=True, exist_ok=True)
    amis = settings.amis
    config = ConnectorSettings(
        system=system,
        base_url=amis.crm_url + "/api/v2" if system == System.CRM else amis.acct_url,
        crm_credentials=crm_credentials(amis),
        acct_app_id=acct_app_id(amis),
        acct_credentials=acct_credentials(amis),
        acct_branches=dict(settings.acct_branch_id),
        kafka=confluent_config(settings.kafka),
        topic_prefix=settings.kafka.topic_prefix,
        ledger_path=ledger_dir / f"{system}-ledger.sqlite",
        shared_ledger_path=shared_ledger_path(settings.data_dir, settings.ledger_dir, system),
        ledger_url=settings.ledger_url,
        ledger_token=settings.ledger_token,
        concurrency=settings.connector_concurrency,
        rate=settings.connector_rate,
        callback_timeout=settings.callback_timeout,
        token_renew_before=settings.token_renew_before,
        extensions=settings.connector_extensions,
        health_port=settings.crm_connector_port if system == System.CRM else settings.acct_connector_port,
        health_host=settings.web_host,
    )
    return Connector(dataclasses.replace(config, **overrides))
