"""``lienthong capture crm|acct``: a capture service, put together from the settings.

CRM: polls every tenant of ``LIENTHONG_CRM_CREDENTIALS``. Accounting: polls every tenant of
``LIENTHONG_ACCT_CREDENTIALS`` and serves each company's callback URL (``/callback/<callback_secret>``
on its public listener, ``LIENTHONG_PUBLIC_HOST:LIENTHONG_CALLBACK_PORT``, which serves nothing else) to
register with MISA; its ``/metrics`` and probes are on the internal listener
(``LIENTHONG_WEB_HOST:LIENTHONG_CAPTURE_PORT``). Both produce to ``cdc.*``, keep their images and
watermarks in ``<data_dir>/capture/<system>-capture.sqlite`` and read the connectors' ledger of recent
writes (``LIENTHONG_LEDGER_DIR``) to tell the integration's own changes (X-1).

With ``LIENTHONG_LEDGER_TOKEN`` set, the capture service is the ledger's one owner and serves it to the
connector replicas of its system (``amis.ledger_http``: their writes, awaited callbacks and command ids)
on ``LIENTHONG_WEB_HOST:LIENTHONG_CRM_LEDGER_PORT`` / ``LIENTHONG_ACCT_LEDGER_PORT``.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from amis import acct_mapping, crm_mapping
from amis.acct_client import ActClient
from amis.credentials import (
    acct_app_id,
    acct_credentials,
    crm_credentials,
    shared_ledger_path,
    token_problems,
)
from amis.crm_client import CrmClient
from amis.ledger import CommandLedger, WriteLedger, command_ledger_path
from amis.ledger_http import ledger_app
from capture.acct import ActCapture
from capture.crm import CrmCapture
from capture.settings import CaptureSettings
from capture.state import CaptureState, ChangeReporter, new_producer
from common import metrics
from common.kafka_config import confluent_config
from common.listeners import serve_app
from common.names import ENTITIES, System, cdc_topic
from common.settings import KafkaSettings
from common.topic_wait import TopicWait

log = logging.getLogger(__name__)


class NothingToCapture(RuntimeError):
    """The settings name no tenant (or no app id) for the system: the message says which variable."""


async def serve_capture(system: System, settings: CaptureSettings, stop: asyncio.Event) -> None:
    state = CaptureState(settings.data_dir / "capture" / f"{system}-capture.sqlite")
    ledger = WriteLedger(shared_ledger_path(settings.data_dir, settings.ledger_dir, system))
    producer = new_producer(confluent_config(settings.kafka))
    reporter = ChangeReporter(system, state, ledger, producer, topic_prefix=settings.kafka.topic_prefix)
    runner: web.AppRunner | None = None
    public: web.AppRunner | None = None  # the accounting capture's callback listener
    served: web.AppRunner | None = None  # the ledger API, for the connector replicas
    commands: CommandLedger | None = None
    topics = TopicWait(
        confluent_config(settings.kafka),
        [settings.kafka.topic_prefix + cdc_topic(system, entity) for entity in ENTITIES[system]],
        service=f"capture {system}",
    )
    try:
        if settings.ledger_token is not None and settings.ledger_token.get_secret_value():
            commands = CommandLedger(command_ledger_path(settings.data_dir, settings.ledger_dir, system))
            port = settings.crm_ledger_port if system == System.CRM else settings.acct_ledger_port
            served = await serve_app(
                ledger_app(ledger, commands, token=settings.ledger_token, system=system), settings.web_host, port
            )
            log.info(
                "the %s ledger API for the connector replicas on http://%s:%s",
                system,
                settings.web_host,
                metrics.bound_port(served),
            )
        async with aiohttp.ClientSession() as session:
            capture: CrmCapture | ActCapture
            if system == System.CRM:
                creds = crm_credentials(settings.amis)
                if not creds:
                    raise NothingToCapture("no tenant to capture: set LIENTHONG_CRM_CREDENTIALS")
                capture = CrmCapture(
                    CrmClient(
                        settings.amis.crm_url + "/api/v2", session, creds, renew_before=settings.token_renew_before
                    ),
                    reporter,
                    list(creds),
                    entities=list(crm_mapping.RESOURCES if settings.capture_extensions else crm_mapping.DOCUMENTED),
                    overlap_s=settings.capture_overlap,
                    poll_interval=settings.capture_poll_interval,
                    deletion_scan_every=settings.capture_deletion_scan_every,
                )
            else:
                creds_acct, app_id = acct_credentials(settings.amis), acct_app_id(settings.amis)
                if not creds_acct or not app_id:
                    raise NothingToCapture(
                        "no tenant to capture: set LIENTHONG_ACCT_APP_ID and LIENTHONG_ACCT_CREDENTIALS"
                    )
                acct = ActCapture(
                    ActClient(
                        settings.amis.acct_url, session, app_id, creds_acct, renew_before=settings.token_renew_before
                    ),
                    reporter,
                    ledger,
                    {tenant: c.org_company_code for tenant, c in creds_acct.items()},
                    callback_secrets=callback_secrets(settings),
                    entities=[
                        e
                        for e, spec in acct_mapping.DICTIONARIES.items()
                        if settings.capture_extensions or spec.extension is None
                    ],
                    overlap_s=settings.capture_overlap,
                    poll_interval=settings.capture_poll_interval,
                )
                # Two listeners: the callback, which the internet reaches, alone on the public one; /metrics
                # and the probes (unauthenticated) on the internal one, which no Ingress forwards to.
                public = await serve_app(acct.callback_app(), settings.public_host, settings.callback_port)
                log.info(
                    "accounting callbacks on http://%s:%s/callback/<callback_secret of the company> for %s",
                    settings.public_host,
                    metrics.bound_port(public),
                    ", ".join(sorted(acct.callback_secrets)) or "no company",
                )
                for tenant in sorted(set(acct.tenants) - set(acct.callback_secrets)):
                    log.warning(
                        "%s has no callback_secret in LIENTHONG_ACCT_CREDENTIALS: its callbacks are not received, "
                        "only pulled from get_call_back_detail_error every poll; set one and register its URL "
                        "with MISA (SECURITY.md)",
                        tenant,
                    )
                capture = acct
            runner = await metrics.serve_health(
                settings.web_host,
                settings.crm_capture_port if system == System.CRM else settings.capture_port,
                readiness(
                    settings.kafka, "CRM" if system == System.CRM else "the accounting API", capture.client, topics
                ),
            )
            # Polled once its topics exist (the probes answer meanwhile): a change produced to a missing
            # topic would fail, and the poll repeat until they exist.
            if await topics.wait_async(stop):
                task = asyncio.create_task(capture.run())
                await stop.wait()
                capture.stop()
                await task
    finally:
        for listener in (public, runner, served):
            if listener is not None:
                await listener.cleanup()
        await asyncio.to_thread(producer.flush, 10)
        state.close()
        ledger.close()
        if commands is not None:
            commands.close()


def callback_secrets(settings: CaptureSettings) -> dict[str, SecretStr]:
    """tenant -> the secret of its callback URL, for the tenants of LIENTHONG_ACCT_CREDENTIALS that have one."""
    return {t: c.callback_secret for t, c in settings.amis.acct_credentials.items() if c.callback_secret is not None}


def readiness(
    kafka: KafkaSettings, name: str, client: CrmClient | ActClient, topics: TopicWait | None = None
) -> metrics.Readiness:
    """``/readyz`` of a capture service: the broker answers, its topics exist and a token can be had
    for every tenant (``name``: the system, as the answer names it)."""
    broker = metrics.BrokerCheck(confluent_config(kafka))

    async def check() -> dict[str, str | None]:
        problems = await token_problems(client)
        checks = {
            "broker": await broker.problem(),
            "api": f"no token from {name} at {client.base_url} ({'; '.join(problems)})" if problems else None,
        }
        if topics is not None and topics.missing:
            checks["topics"] = topics.readiness()
        return checks

    return check
