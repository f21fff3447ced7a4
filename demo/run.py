"""`lienthong demo`: the whole thing on this machine, and a scripted business day across both systems.

Starts the local broker (if none answers), creates the topics, runs a worker, both sandboxes (which
speak the public AMIS APIs), both capture services and both connectors, then works a day as a sales
person in CRM and an accountant in accounting would, waiting at each step until the other system
shows the result.
Prints what synced and where to look.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from common import topic_wait
from common.kafka_config import confluent_config
from common.metrics import bound_port
from common.names import DLQ_CDC, DLQ_COMMANDS, System, commands_topic
from common.settings import KafkaSettings
from demo.local import APP_ID, Accountant, CrmUser, LocalSystems, acct_access, crm_login, local_systems
from demo.settings import DemoSettings


class DemoFailed(RuntimeError):
    """A step of the business day did not end as it should: the message says what CRM or accounting showed."""


class DemoCannotStart(DemoFailed):
    """Something the demo needs is not there (a port, the broker, its worker): which, why, what to do."""


# --- a run of its own ------------------------------------------------------------------------------------
#
# Every run starts clean: its own topics (a topic prefix made for the run, which the worker's app id
# and the connectors' groups carry too), its own sandboxes' databases and worker files (a directory
# made for the run). Nothing of an earlier run, of this checkout or another, is seen: the broker
# (shared by every checkout: kafka.sh keeps its data under ~/.cache/lienthong) holds other runs'
# topics under other prefixes. At start a run deletes what the earlier runs of this checkout left:
# their topics and their directory.

CHECKOUT = hashlib.sha1(str(Path(__file__).resolve().parents[1]).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class DemoRun:
    run_id: str
    base: KafkaSettings  # the broker as configured
    directory: Path
    base_app_id: str = "lienthong"  # LIENTHONG_APP_ID

    @property
    def checkout_prefix(self) -> str:
        """What the topics of every run of this checkout start with."""
        return f"{self.base.topic_prefix}demo-{CHECKOUT}-"

    @property
    def kafka(self) -> KafkaSettings:
        """The broker, with this run's topic prefix."""
        return self.base.model_copy(update={"topic_prefix": f"{self.checkout_prefix}{self.run_id}."})

    @property
    def app_id(self) -> str:
        """The worker's, under the run's prefix: its group and internal topics are the run's too."""
        return f"{self.kafka.topic_prefix}{self.base_app_id}"


def new_run(settings: DemoSettings) -> DemoRun:
    run_id = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)
    return DemoRun(run_id, settings.kafka, Path(settings.data_dir) / "demo" / run_id, settings.app_id)


def clear_earlier_runs(run: DemoRun) -> list[str]:
    """Delete the topics and files earlier demo runs of this checkout left; returns the topics deleted."""
    from ops.admin import delete_topics_with_prefix

    demo_dir = run.directory.parent
    if demo_dir.is_dir():
        for earlier in demo_dir.iterdir():
            if earlier != run.directory:
                shutil.rmtree(earlier) if earlier.is_dir() else earlier.unlink()
    return delete_topics_with_prefix(run.base, run.checkout_prefix)


def check_ports(settings: DemoSettings, ports: dict[str, int]) -> None:
    """Every port the demo listens on is free: else which, held how, and the option that moves it."""
    from common.listeners import CannotListen, check_port

    wanted = {"LIENTHONG_WEB_PORT (the worker's /readyz and /metrics)": settings.web_port, **ports}
    for mover, port in wanted.items():
        try:
            check_port("127.0.0.1", port)
        except CannotListen as exc:
            raise DemoCannotStart(f"{exc}: stop that process, or move it with {mover}") from None


async def worker_ready(worker: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 90.0) -> None:
    """Wait until the worker process answers 200 on its /readyz; say why not if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    said = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            status = worker.poll()
            if status is not None:
                raise DemoCannotStart(
                    f"the worker exited (status {status}) before it was ready: {_last_line(log_path)} "
                    f"(its log: {log_path})"
                )
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
                    if answer.status == 200:
                        return
                    said = f"{answer.status} {(await answer.text()).strip()[:300]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                said = f"no answer ({exc.__class__.__name__})"
            if time.monotonic() > deadline:
                raise DemoCannotStart(
                    f"the worker was not ready within {timeout:g}s: its /readyz on port {port} said {said} "
                    f"(its log: {log_path})"
                )
            await asyncio.sleep(0.3)


def _last_line(log_path: Path) -> str:
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:400] if lines else "it wrote nothing"


def expect(holds: bool, otherwise: str) -> None:
    if not holds:
        raise DemoFailed(otherwise)


async def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise DemoFailed(f"not within {timeout}s: {what}")


async def business_day(
    systems: LocalSystems, tenant: str, session: aiohttp.ClientSession, say: Callable[[str], None] = lambda line: None
) -> None:
    crm, acct = CrmUser(systems, tenant, session), Accountant(systems, tenant, session)

    # 1. CUS-6: an accountant creates a customer; capture finds it, it appears in CRM and the two are linked
    say("accounting: new customer KH0001 'Công ty ABC' (CUS-6 creates it in CRM)")
    await acct.save("customer", {"code": "KH0001", "name": "Công ty ABC", "tax_code": "0101234567"})
    crm_customer = await eventually(lambda: systems.crm_record(tenant, "customer", "KH0001"), what="KH0001 in CRM")
    expect(crm_customer["name"] == "Công ty ABC", f"KH0001 reached CRM with another name: {crm_customer}")
    say(f"  -> in CRM as id {crm_customer['id']}")
    # ... linked: a CRM edit of it (CUS-3, only for linked customers) reaches the acct record
    say("CRM: sales adds a phone number to KH0001 (CUS-3: linked customers only)")
    await crm.save("customer", {"id": crm_customer["id"], "phone": "0901000001"})
    await eventually(
        lambda: (systems.acct_record(tenant, "customer", "KH0001") or {}).get("phone") == "0901000001",
        what="CUS-3 in acct",
    )
    say("  -> accounting has the phone number")

    # 2. a CRM-only customer and product; an order proposed for revenue (SO-1/SO-4 with X-4 dependencies)
    say("CRM: customer KH0002 and product SP01 (PRD-1), order DH0001 drafted, then proposed for revenue")
    await crm.save("customer", {"code": "KH0002", "name": "Cửa hàng B"})
    await crm.save("product", {"code": "SP01", "name": "Bút bi", "unit": "cái", "unit_price": "5000"})
    order = {
        "code": "DH0001",
        "customer_code": "KH0002",
        "revenue_status": "draft",
        "status": "not_started",
        "total_amount": "50000",
        "lines": [{"product_code": "SP01", "quantity": 10, "unit_price": "5000", "amount": "50000"}],
    }
    saved = await crm.save("sale_order", order)
    await crm.save("sale_order", {"id": saved["id"], "revenue_status": "proposed"})
    proposal = await eventually(
        lambda: systems.acct_record(tenant, "sale_order", "DH0001"), what="the proposal of DH0001 in acct"
    )
    expect(
        proposal.get("crm_id") == saved["id"] and proposal.get("customer_code") == "KH0002",
        f"DH0001 reached accounting without its CRM id or customer: {proposal}",
    )
    expect(systems.acct_record(tenant, "customer", "KH0002") is not None, "KH0002 was not sent first (X-4)")
    expect(systems.acct_record(tenant, "product", "SP01") is not None, "SP01 was not sent first (X-4)")
    say(f"  -> accounting has a proposal for DH0001 ({proposal['id']}) after customer KH0002 and product SP01 (X-4)")

    # 3. the accountant generates the voucher; a delivery and a receipt come back as CRM statuses
    say("accounting: the accountant generates sales order DH0001 from the proposal (callback 18)")
    await acct.generate(proposal["id"])
    say("accounting: delivery XK0001 of 4 pens and receipt PT0001 of 20 000 for DH0001 (callbacks 22)")
    line_id = proposal["lines"][0]["line_id"]
    await acct.enter(
        "sales_voucher",
        {
            "code": "XK0001",
            "order_id": proposal["id"],
            "lines": [{"line_id": line_id, "product_code": "SP01", "quantity": 4, "amount": "20000"}],
        },
    )
    await acct.enter("receipt", {"code": "PT0001", "order_id": proposal["id"], "amount": "20000"})

    def crm_order_statuses():
        record = systems.crm_record(tenant, "sale_order", "DH0001") or {}
        ready = record.get("pay_status") == "partially_paid" and record.get("delivery_status") == "delivering"
        return record if ready else None

    crm_order = await eventually(crm_order_statuses, what="derived statuses in CRM")
    expect(
        crm_order.get("delivered_quantities") == [{"line_id": line_id, "delivered_quantity": "4"}],
        f"CRM shows other delivered quantities: {crm_order.get('delivered_quantities')}",
    )
    expect(
        crm_order.get("receipted_amount") == "20000" and crm_order.get("remaining_receivable") == "30000",
        f"CRM shows other payment figures: {crm_order}",
    )
    expect(crm_order["lines"][0]["product_code"] == "SP01", "the order's own lines changed")
    say(
        f"  -> CRM order DH0001: delivery {crm_order['delivery_status']}, pay {crm_order['pay_status']}, "
        f"remaining {crm_order['remaining_receivable']}"
    )


def broker_answers(kafka: KafkaSettings, timeout: float = 3.0) -> bool:
    """Whether a Kafka broker answers at the configured bootstrap servers (whoever started it)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient(confluent_config(kafka)).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def _ensure_broker_and_topics(settings: DemoSettings) -> None:
    _ensure_broker(settings.kafka)
    _create_topics(settings)


def _ensure_broker(kafka: KafkaSettings) -> None:
    """A broker answers at the bootstrap servers: one that was there, or the local one, started."""
    from ops.local_broker import LocalBrokerError, run_kafka_script

    if broker_answers(kafka):
        print(f"using the Kafka broker at {kafka.bootstrap_servers}")
    else:
        try:
            started = run_kafka_script("start", kafka) == 0
        except LocalBrokerError as exc:
            raise DemoCannotStart(f"no Kafka broker answers at {kafka.bootstrap_servers}, and {exc}") from None
        if not started:
            raise DemoCannotStart(
                f"no Kafka broker answers at {kafka.bootstrap_servers} and the local one did not start (the "
                "message above says why): start one (lienthong kafka start, or docker compose up kafka) or point "
                "LIENTHONG_BOOTSTRAP_SERVERS at one"
            )


def _create_topics(settings: DemoSettings) -> None:
    from ops.admin import create_topics

    kafka = settings.kafka
    outcomes = create_topics(
        kafka, partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor
    )
    print(
        f"topics: {sum(o.status == 'created' for o in outcomes)} created, "
        f"{sum(o.status == 'exists' for o in outcomes)} already there"
    )


SUMMED = (commands_topic(System.CRM), commands_topic(System.ACCT), DLQ_CDC, DLQ_COMMANDS)


def end_offsets(kafka: KafkaSettings, topics: tuple[str, ...] = SUMMED) -> dict[tuple[str, int], int]:
    """Where each partition of ``topics`` ends now: the demo counts what comes after."""
    from confluent_kafka import Consumer

    consumer = Consumer(confluent_config(kafka, {"group.id": "lienthong-demo-marks", "enable.auto.commit": False}))
    prefix = kafka.topic_prefix
    try:
        ends = topic_wait.end_offsets(consumer, [prefix + topic for topic in topics], 30)
        return {(name.removeprefix(prefix), partition): end for (name, partition), end in ends.items()}
    finally:
        consumer.close()


def tenant_counts(
    kafka: KafkaSettings, tenant: str, since: dict[tuple[str, int], int], topics: tuple[str, ...] = SUMMED
) -> dict[str, int]:
    """Messages of ``tenant`` (keys ``<tenant>:…``) on each of ``topics`` after the offsets ``since`` (a
    partition not in it: from its start): this run's commands and dead letters, whatever else the broker
    carried before or beside it."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    now = end_offsets(kafka, topics)
    counts = dict.fromkeys(topics, 0)
    wanted = {tp: end for tp, end in now.items() if end > since.get(tp, 0)}
    if not wanted:
        return counts
    consumer = Consumer(
        confluent_config(
            kafka, {"group.id": "lienthong-demo-marks", "enable.auto.commit": False, "enable.partition.eof": True}
        )
    )
    prefix = f"{tenant}:".encode()

    try:
        consumer.assign([TopicPartition(kafka.topic_prefix + t, p, since.get((t, p), 0)) for t, p in wanted])
        deadline = time.monotonic() + 30
        while wanted and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            topic = (message.topic() or "")[len(kafka.topic_prefix) :]
            where = (topic, message.partition() or 0)
            error = message.error()
            if error is not None:
                # read to its end, past the markers the processor's transactions leave
                if error.code() == KafkaError._PARTITION_EOF and (message.offset() or 0) >= wanted.get(where, 0):
                    wanted.pop(where, None)
                continue

            counts[topic] += (message.key() or b"").startswith(prefix)
            if (message.offset() or 0) + 1 >= wanted.get(where, 0):
                wanted.pop(where, None)
    finally:
        consumer.close()
    return counts


async def run_demo(
    settings: DemoSettings,
    *,
    tenant: str = "cty-demo",
    crm_port: int = 8081,
    acct_port: int = 8082,
    dashboard_port: int = 8080,
    keep_running: bool = True,
) -> int:
    """The whole loop on this machine, a run of its own (``DemoRun``); returns a process exit code."""
    check_ports(settings, {"--crm-port": crm_port, "--acct-port": acct_port, "--dashboard-port": dashboard_port})
    run = new_run(settings)
    _ensure_broker(settings.kafka)
    cleared = clear_earlier_runs(run)
    kafka = run.kafka
    _create_topics(settings.model_copy(update={"kafka": kafka}))
    print(
        f"this run: {run.run_id}; its topics: {kafka.topic_prefix}* ({len(cleared)} topic(s) of earlier runs deleted); "
        f"its files: {run.directory}"
    )
    data = run.directory
    data.mkdir(parents=True, exist_ok=True)
    marks: dict[tuple[str, int], int] = {}  # the run's topics are its own: everything on them is this run's
    worker_env = {
        **os.environ,
        "LIENTHONG_DATA_DIR": str(data / "worker"),
        "LIENTHONG_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LIENTHONG_TOPIC_PREFIX": kafka.topic_prefix,
        "LIENTHONG_APP_ID": run.app_id,
        "LIENTHONG_WEB_ENABLED": "true",  # its /readyz says when it is ready
        "LIENTHONG_WEB_PORT": str(settings.web_port),
    }
    worker_env.pop("LIENTHONG_KAFKA_PORT", None)  # the bootstrap servers above say where the broker is
    log_path = data / "worker.log"
    with open(log_path, "wb") as worker_log:
        # its own session: Ctrl-C in the terminal reaches the demo only, which stops the worker after the
        # services that feed it (the finally below), instead of killing it under them
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            env=worker_env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await worker_ready(worker, settings.web_port, log_path)
        print(f"worker ready (pid {worker.pid}, log {log_path})")
        given_token = settings.sandbox_admin_token
        async with local_systems(
            kafka=kafka,
            data_dir=data / "systems",
            tenants=[tenant],
            ports={System.CRM: crm_port, System.ACCT: acct_port},
            admin_token=given_token.get_secret_value() if given_token is not None else None,
        ) as systems:
            from common.listeners import serve_app
            from demo.dashboard import create_demo_dashboard

            worker_metrics = f"http://127.0.0.1:{settings.web_port}/metrics"
            dashboard = await serve_app(
                create_demo_dashboard(kafka, systems, worker_metrics), "127.0.0.1", dashboard_port
            )
            dashboard_url = f"http://127.0.0.1:{bound_port(dashboard)}"
            client_id, secret = crm_login(tenant)
            access_code, company = acct_access(tenant)
            print(
                f"CRM sandbox:        {systems.crm.url}/   (API {systems.crm.api_url}, AppID {client_id}, "
                f"secret {secret})"
            )
            print(
                f"accounting sandbox: {systems.acct.url}/   (app_id {APP_ID}, access_code {access_code}, "
                f"org_company_code {company})"
            )
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                await business_day(systems, tenant, session, say=print)
            print(f"\nthe business day synced in {time.monotonic() - started:.1f}s:")
            for local in (systems.crm, systems.acct):
                counts = systems.creations(local.system, tenant)
                stats = dict(local.connector.stats)
                print(
                    f"  {local.system}: {len(counts)} records created "
                    f"({', '.join(sorted({entity for entity, _ in counts}))}); connector {stats}"
                )
            print(
                f"\nthis run's topics: LIENTHONG_TOPIC_PREFIX={kafka.topic_prefix} before a command reads them, "
                f"e.g. the audit trail of a record (by its code or either system's id): "
                f"LIENTHONG_TOPIC_PREFIX={kafka.topic_prefix} .venv/bin/lienthong explain {tenant} customer KH0001"
                f"   (or: sale_order DH0001)"
            )
            from demo.dashboard import broker_numbers

            await asyncio.sleep(1.5)  # the last commits
            numbers = await asyncio.to_thread(broker_numbers, kafka)
            mine = await asyncio.to_thread(tenant_counts, kafka, tenant, marks)
            crm, acct = mine[commands_topic(System.CRM)], mine[commands_topic(System.ACCT)]
            print(
                f"sync health: lag {numbers['lag']}; this run's commands for {tenant}: crm {crm}, acct {acct}; "
                f"dead letters {mine[DLQ_CDC] + mine[DLQ_COMMANDS]}"
            )
            from ops.deadletters import Filters, dead_letters

            for topic in (DLQ_CDC, DLQ_COMMANDS):
                if mine[topic]:
                    for letter in await asyncio.to_thread(list, dead_letters(kafka, topic, Filters(tenant=tenant))):
                        print(
                            f"  dead letter {letter.where}, key {letter.key!r}: {letter.kind}: {letter.message[:300]}"
                        )
            print(f"pages: {systems.crm.url}/  {systems.acct.url}/   sync health: {dashboard_url}/")
            if given_token is None:  # made for this run: said once, on the console (SECURITY.md)
                print(
                    f"the sandboxes' /sandbox/... routes need 'Authorization: Bearer {systems.admin_token}'; "
                    f"the accounting page with its buttons: {systems.page(systems.acct)}"
                )
            else:
                print("the sandboxes' /sandbox/... routes and buttons need LIENTHONG_SANDBOX_ADMIN_TOKEN (/?token=…)")
            if keep_running:
                print(
                    "\nrunning; Ctrl-C stops the sandboxes, capture, connectors and worker (the broker keeps running)"
                )
                await asyncio.Event().wait()
            await dashboard.cleanup()
        return 0
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
