"""The ``lienthong`` command line.

lienthong worker                      run the stream processor (a faust worker)
lienthong kafka start|stop|status     the local Apache Kafka broker (deploy/kafka/kafka.sh)
lienthong topics create               create every topic of the contract, idempotently
lienthong topics list                 the contract's topics with their settings
lienthong matrix [--markdown]         the rule table (docs/matrix.md is its markdown)
lienthong contract generate|check|validate   docs/contract/: the AsyncAPI document and JSON Schemas
lienthong history TENANT ENTITY ID [--json]   one record's story on both sides (explain: its old name)
lienthong tenant set TENANT --order-target sale_order|contract | get TENANT | list   tenant settings, as JSON
lienthong reconcile --tenant T [--repair]   drift between the two systems' linked records, and its repair
lienthong lag [--watch]               committed offset, end offset and lag per group/topic/partition
lienthong dlq list|show|replay        dead letters: filter (--kind, --tenant, --since/--until), show whole, replay
lienthong backfill --tenant T --system crm|acct [--entity E] [--from-file F.jsonl]   op=r snapshots
lienthong demo [--exit]               everything locally, and a scripted business day
lienthong connector crm|acct          a connector service (LIENTHONG_CRM_CREDENTIALS / _ACCT_*, _CRM_URL, _ACCT_URL)
lienthong capture crm|acct            a capture service: polls the system (and takes ACT's callbacks) into cdc.*
lienthong sandbox crm|acct [--port]   a sandbox of one system (LIENTHONG_SANDBOX_CREDENTIALS, _FAULTS, _ADMIN_TOKEN)
lienthong webhooks [--port]           the webhook receiver (LIENTHONG_WEBHOOK_SECRETS)
lienthong dashboard [--port] [--scrape URL ...] [--whatif FILE]  the operator's page (lag, sync health, whatif reports)
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
from typing import TYPE_CHECKING

import click

from capture.settings import CaptureSettings, WebhookSettings
from cli.command import (
    INTERRUPTED,
    NOT_IN_ORDER,
    OK,
    PORT,
    SECONDS,
    USER_ERROR,
    Args,
    add,
    argument,
    json_option,
    option,
    parse,
    print_json,
    usage_error,
)
from cli.history import add_history_commands
from cli.operator import add_operator_commands
from cli.whatif import add_whatif_command
from common.kafka_config import confluent_config
from common.listeners import CannotListen, check_port
from common.names import System
from common.settings import InvalidSettings, KafkaSettings, ServiceSettings, env_name, read_settings
from connectors.settings import ConnectorServiceSettings
from ops.settings import OpsSettings
from streams.core.rules import ORDER_TARGETS
from streams.core.sync_settings import SyncSettings
from streams.settings import WorkerSettings

if TYPE_CHECKING:  # not in the production image: imported where the commands are added, when installed
    from demo.settings import DemoSettings
    from sandboxes.settings import SandboxSettings

# What a command line names a system by (``System``'s values): parsed into a ``System`` by the command.
SYSTEM_NAMES = [system.value for system in System]

# Each command reads the settings of its service (``add(name, SettingsClass, ...)``), once, in ``main``.


def _kafka(args: Args, settings: OpsSettings) -> int:
    from ops.local_broker import LocalBrokerError, run_kafka_script

    try:
        if args.as_json:
            if args.action != "status":
                raise LocalBrokerError("--json is for `lienthong kafka status`")
            said: list[str] = []
            code = run_kafka_script("status", settings.kafka, said=said)
            print_json({"running": code == 0, "bootstrap_servers": settings.kafka.bootstrap_servers, "said": said})
            return 0 if code == 0 else NOT_IN_ORDER
        return run_kafka_script(args.action, settings.kafka)
    except LocalBrokerError as exc:
        print(f"lienthong: {exc}", file=sys.stderr)
        return 2


def _topics(args: Args, settings: OpsSettings) -> int:
    from streams.topics import contract_topics

    if args.action == "list" and args.as_json:
        print_json(
            [
                {"name": settings.kafka.topic_prefix + spec.name, "role": spec.role, "config": spec.kafka_config()}
                for spec in contract_topics()
            ]
        )
        return 0
    if args.action == "list":
        for spec in contract_topics():
            config = ", ".join(f"{k}={v}" for k, v in spec.kafka_config().items())
            print(f"{settings.kafka.topic_prefix}{spec.name}\t{spec.role}\t{config}")
        return 0
    from ops.admin import create_topics

    try:
        outcomes = create_topics(
            settings.kafka,
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
        )
    except RuntimeError as exc:
        print(f"lienthong topics create: {exc}", file=sys.stderr)
        return USER_ERROR
    failed = False
    for outcome in outcomes:
        print(f"{outcome.status:8} {outcome.name} {outcome.detail}".rstrip())
        failed |= outcome.status == "mismatch"
    print(
        f"{sum(o.status == 'created' for o in outcomes)} created, "
        f"{sum(o.status == 'exists' for o in outcomes)} already there, "
        f"{sum(o.status == 'mismatch' for o in outcomes)} with other settings "
        f"({settings.topic_partitions} partitions, replication {settings.topic_replication_factor})"
    )
    return 1 if failed else 0


def _kafka_refuses(kafka: KafkaSettings, command: str) -> bool:
    """With TLS or SASL configured: a refused login or handshake is said at start, not retried forever."""
    if kafka.kafka_security_protocol == "PLAINTEXT":
        return False
    from ops.admin import refused_connection

    problem = refused_connection(kafka)
    if problem is not None:
        print(f"lienthong {command}: {problem}", file=sys.stderr)
    return problem is not None


def _worker(args: Args, settings: WorkerSettings) -> int:
    from streams.app import run_worker
    from streams.core.rules import RuleTableError

    if _kafka_refuses(settings.kafka, "worker"):
        return 2
    if settings.web_enabled:  # faust would start, fail to listen deep inside, and stop with a traceback
        check_port(settings.web_host, settings.web_port)
    problem = _broker_problem(settings.kafka)  # faust would retry for a while, then crash with a traceback
    if problem is not None:
        print(f"lienthong worker: {problem}", file=sys.stderr)
        return USER_ERROR
    # faust's Worker reads sys.argv for its own options; give it none of ours.
    sys.argv = [sys.argv[0]]
    try:
        run_worker(settings)
    except RuleTableError as exc:
        print(f"lienthong worker: the rule table is invalid, not starting: {exc}", file=sys.stderr)
        return 2
    return 0


def _tables(args: Args, settings: WorkerSettings) -> int:
    """``lienthong tables migrate``: the faust tables of a deployment from before 2026-12 to the state
    changelog (docs/deploy.md, "Upgrading from the faust tables")."""
    from streams.app import ensure_internal_topics
    from streams.upgrade import MigrationRefused, migrate

    if _kafka_refuses(settings.kafka, "tables migrate"):
        return 2
    try:
        ensure_internal_topics(settings)
        migrated = migrate(settings, progress=lambda table, n: print(f"read {n} message(s) of {table}", flush=True))
    except (MigrationRefused, RuntimeError) as exc:
        print(f"lienthong tables migrate: {exc}", file=sys.stderr)
        return 2
    per_table = ", ".join(f"{table} {count}" for table, count in migrated.keys.items()) or "nothing"
    print(f"migrated {migrated.total} key(s) to {settings.app_id}-state-changelog ({per_table}); start the new workers")
    return 0


def _matrix(args: Args, settings: ServiceSettings) -> int:
    from streams.core.matrix_doc import matrix_markdown
    from streams.core.rules import load_rules

    book = load_rules()
    if args.as_json:
        print_json([rule.model_dump(mode="json", exclude_defaults=True) for rule in book.rules])
        return 0
    if args.markdown:
        sys.stdout.write(matrix_markdown(book))
    else:
        for rule in book.rules:
            print(f"{rule.id:7} {rule.source.value:4} {rule.entity:16} {rule.effect.value:14} {rule.label_en}")
    return 0


def _contract(args: Args, settings: ServiceSettings) -> int:
    from ops.contract_files import CONTRACT_DIR, ToolMissing, render_html, stale, validate, write

    try:
        if args.action == "check":
            late = stale()
            for name in late:
                print(f"stale: docs/contract/{name}")
            if late:
                print("lienthong contract check: run `lienthong contract generate`", file=sys.stderr)
            return 1 if late else 0
        if args.action == "validate":
            outcome = validate()
            print(outcome.output)
            return 0 if outcome.ok else 1
        changed = write()
        print(f"{CONTRACT_DIR}: {len(changed)} file(s) written" + "".join(f"\n  {name}" for name in changed))
        if args.no_html:
            return 0
        try:
            print(f"the HTML page: {render_html()} (the AsyncAPI CLI's html-template)")
        except ToolMissing as exc:
            print(f"no HTML page: {exc}")
        return 0
    except ToolMissing as exc:
        print(f"lienthong contract {args.action}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"lienthong contract {args.action}: {exc}", file=sys.stderr)
        return 1


def _tenant(args: Args, settings: OpsSettings) -> int:

    from cli.operator import _quiet_clients

    _quiet_clients()

    from ops.operations import TenantError, get_tenant, read_tenants, set_tenant

    try:
        if args.action == "list":
            if args.tenant or args.order_target or args.settings_file:
                raise TenantError("`tenant list` takes no tenant, --order-target or --file")
            print_json([found.as_json() for found in read_tenants(settings.kafka).values()])
            return OK
        if not args.tenant:
            raise TenantError(f"which tenant? `lienthong tenant {args.action} TENANT`")
        if args.action == "get":
            if args.order_target or args.settings_file:
                raise TenantError("`tenant get` takes no --order-target or --file (`tenant set` writes them)")
            print_json(get_tenant(settings.kafka, args.tenant).as_json())
            return OK
        if args.settings_file:
            if args.order_target:
                raise TenantError("give --order-target or --file, not both (the file may say order_target)")
            print_json(set_tenant(settings.kafka, args.tenant, settings=_settings_file(args, settings)))
            return OK
        if not args.order_target:
            raise TenantError(
                f"what to set? `lienthong tenant set {args.tenant} --order-target sale_order|contract` "
                "or `--file SETTINGS.toml` (docs/sync-settings.md)"
            )
        print_json(set_tenant(settings.kafka, args.tenant, args.order_target))
        return OK
    except TenantError as exc:
        print(f"lienthong tenant: {exc}", file=sys.stderr)
        return NOT_IN_ORDER if args.action == "get" and "has no settings" in str(exc) else USER_ERROR


def _settings_file(args: Args, settings: OpsSettings) -> SyncSettings:
    """The settings in ``--file``, checked (the next revision of those in force); ``TenantError`` if not."""
    from pathlib import Path

    from ops.operations import TenantError, settings_in_force
    from ops.settings_file import load_settings_file
    from streams.core.rules import load_rules
    from streams.core.sync_settings import SettingsError

    try:
        in_force = settings_in_force(settings.kafka, args.tenant)
        return load_settings_file(
            Path(args.settings_file),
            args.tenant,
            load_rules(),
            revision=in_force.revision + 1,
            extensions=settings.connector_extensions,
        )
    except SettingsError as exc:
        raise TenantError(str(exc)) from None


def _demo(args: Args, settings: DemoSettings) -> int:
    import asyncio

    from demo.run import DemoCannotStart, DemoFailed, run_demo

    if "log_level" not in settings.log.model_fields_set:
        # the demo's own output tells the story; LIENTHONG_LOG_LEVEL=info shows every service's lines too
        logging.getLogger().setLevel(logging.WARNING)
    # SIGTERM stops the demo as Ctrl-C does: through its finally clauses, which stop the worker it started
    # (Python's default for SIGTERM ends the process at once and left the worker running)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(
            run_demo(
                settings,
                tenant=args.tenant,
                crm_port=args.crm_port,
                acct_port=args.acct_port,
                dashboard_port=args.dashboard_port,
                keep_running=not args.exit,
            )
        )
    except DemoCannotStart as exc:  # a port, the broker, the worker: said with what to do
        print(f"lienthong demo: {exc}", file=sys.stderr)
        return USER_ERROR
    except DemoFailed as exc:  # a step of the business day did not end as it should
        print(f"lienthong demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _serve_until_signal(main) -> int:
    """Run ``main(stop_event)`` until SIGTERM or SIGINT sets the event."""
    import asyncio
    import signal

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
    return 0


def _connector(args: Args, settings: ConnectorServiceSettings) -> int:
    if _kafka_refuses(settings.kafka, f"connector {args.system}"):
        return 2
    _said_if_no_broker(settings.kafka, f"connector {args.system}")
    import asyncio

    from connectors.service import build_connector

    connector = build_connector(settings, System(args.system))

    async def main(stop: asyncio.Event) -> None:
        task = asyncio.create_task(connector.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        # SIGTERM: take no new command, finish and report the ones in flight, commit, exit (or: it failed
        # to start, its probes' port taken, say)
        connector.stop()
        await task

    return _serve_until_signal(main)


def _capture(args: Args, settings: CaptureSettings) -> int:
    if _kafka_refuses(settings.kafka, f"capture {args.system}"):
        return 2
    _said_if_no_broker(settings.kafka, f"capture {args.system}")

    from capture.service import NothingToCapture, serve_capture

    try:
        return _serve_until_signal(lambda stop: serve_capture(System(args.system), settings, stop))
    except NothingToCapture as exc:
        print(f"lienthong capture {args.system}: {exc}", file=sys.stderr)
        return 2


def sandbox_credentials(settings: SandboxSettings, system: System) -> dict[str, str]:
    """What a sandbox accepts: LIENTHONG_SANDBOX_CREDENTIALS in the sandbox's own layout when set, else the
    connectors' layout (LIENTHONG_CRM_CREDENTIALS, LIENTHONG_ACCT_CREDENTIALS), so one setting serves both."""
    if settings.sandbox_logins:
        return settings.sandbox_logins
    accepted: dict[str, str] = {}
    if system == System.CRM:
        for tenant, crm in settings.crm_credentials.items():
            accepted[crm.client_id] = tenant
            accepted[f"{crm.client_id}:secret"] = crm.client_secret.get_secret_value()
    else:
        for tenant, acct in settings.acct_credentials.items():
            accepted[f"{settings.acct_app_id.get_secret_value()}:{acct.access_code.get_secret_value()}"] = tenant
    return accepted


def acct_callback_urls(settings: SandboxSettings) -> dict[str, str]:
    """Where the accounting sandbox posts each tenant's callbacks: LIENTHONG_ACCT_CALLBACK_URL followed by
    the tenant's callback_secret, the URL registered with MISA for that company."""
    base = (settings.acct_callback_url or "").rstrip("/")
    if not base:
        return {}
    return {
        tenant: f"{base}/{acct.callback_secret.get_secret_value()}"
        for tenant, acct in settings.acct_credentials.items()
        if acct.callback_secret is not None
    }


def _sandbox(args: Args, settings: SandboxSettings) -> int:
    import asyncio

    from sandboxes.app import run_sandbox
    from sandboxes.faults import fault_config

    try:
        faults = fault_config(settings.sandbox_faults)
    except ValueError as exc:
        print(f"lienthong sandbox: invalid LIENTHONG_SANDBOX_FAULTS: {exc}", file=sys.stderr)
        return 2
    system = System(args.system)
    if system == System.ACCT and not settings.acct_app_id.get_secret_value():
        print("lienthong sandbox acct: set LIENTHONG_ACCT_APP_ID (the app id it accepts)", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    port = args.port if args.port is not None else (8081 if system == System.CRM else 8082)

    from sandboxes.admin import new_admin_token, page_link

    given = settings.sandbox_admin_token
    admin_token = given.get_secret_value() if given is not None else new_admin_token()

    def ready(url: str) -> None:  # with --port 0 this is the only way to learn the port
        print(f"{system} sandbox on {url}/", flush=True)
        if given is None:  # made for this run: said once, here (like Jupyter's link), never logged
            print(
                f"its /sandbox/... routes need 'Authorization: Bearer {admin_token}' (LIENTHONG_SANDBOX_ADMIN_TOKEN "
                f"unset: made for this run); the page with its buttons: {page_link(url, admin_token)}",
                flush=True,
            )
        else:
            print("its /sandbox/... routes need LIENTHONG_SANDBOX_ADMIN_TOKEN as 'Authorization: Bearer'", flush=True)

    async def main(stop: asyncio.Event) -> None:
        task = asyncio.create_task(
            run_sandbox(
                system,
                db=settings.data_dir / f"{system}-sandbox.sqlite",
                port=port,
                credentials=sandbox_credentials(settings, system),
                faults=faults,
                host=settings.web_host,
                app_id=settings.acct_app_id.get_secret_value(),
                callback_url=settings.acct_callback_url,
                callback_urls=acct_callback_urls(settings),
                acct_answers=settings.sandbox_acct_answers,
                ready=ready,
                admin_token=admin_token,
                crm_answers=settings.sandbox_crm_answers,
            )
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if task.done():  # it could not start (its port taken, say): said by main
            task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return _serve_until_signal(main)


def _webhooks(args: Args, settings: WebhookSettings) -> int:
    if _kafka_refuses(settings.kafka, "webhooks"):
        return 2
    _said_if_no_broker(settings.kafka, "webhooks")
    import asyncio

    from capture.webhooks import create_webhooks, secrets_by_tenant
    from common.listeners import serve_app
    from common.metrics import bound_port, serve_health

    try:
        secrets = secrets_by_tenant(settings.webhook_secrets)
    except ValueError as exc:
        print(f"lienthong webhooks: invalid LIENTHONG_WEBHOOK_SECRETS: {exc}", file=sys.stderr)
        return 2
    port = args.port if args.port is not None else settings.webhook_port

    async def main(stop: asyncio.Event) -> None:
        # the public listener serves /webhooks/... alone; /metrics and the probes (ready once it serves: the
        # broker is checked by each delivery) are on the internal one
        public = await serve_app(
            create_webhooks(
                secrets=secrets,
                kafka=confluent_config(settings.kafka),
                topic_prefix=settings.kafka.topic_prefix,
                data_dir=settings.data_dir,
            ),
            settings.public_host,
            port,
        )
        internal = await serve_health(settings.web_host, settings.webhook_metrics_port)
        print(f"webhooks on http://{settings.public_host}:{bound_port(public)}/webhooks/<system>/<tenant>", flush=True)
        try:
            await stop.wait()
        finally:
            await public.cleanup()
            await internal.cleanup()

    return _serve_until_signal(main)


def _dashboard(args: Args, settings: OpsSettings) -> int:
    import asyncio
    from pathlib import Path

    from common.listeners import serve_app
    from common.metrics import bound_port
    from ops.dashboard.web import DashboardAccess, create_dashboard
    from ops.dashboard.whatif_page import ReportError, load_report
    from ops.history import KeptIndex

    try:
        reports = [load_report(Path(path)) for path in args.whatif]
    except ReportError as exc:
        print(f"lienthong dashboard: {exc}", file=sys.stderr)
        return 2

    async def main(stop: asyncio.Event) -> None:
        access = DashboardAccess.of(
            web_host=settings.web_host, hosts=settings.dashboard_hosts, token=settings.dashboard_token
        )
        runner = await serve_app(
            create_dashboard(
                settings.kafka,
                list(args.scrape),
                interval=args.interval,
                access=access,
                history=KeptIndex(settings.kafka, settings.data_dir),
                whatif_reports=reports,
            ),
            settings.web_host,
            args.port,
        )
        print(f"the operator's page: http://{settings.web_host}:{bound_port(runner)}/", flush=True)
        if settings.dashboard_token is not None:
            print("it needs LIENTHONG_DASHBOARD_TOKEN: open it once as /?token=<token>", flush=True)
        await stop.wait()
        await runner.cleanup()

    return _serve_until_signal(main)


def _installed(package: str) -> bool:
    """Whether ``package`` is part of this installation: the production image (deploy/Dockerfile) ships
    the services a deployment runs, not the sandboxes or the demo, and has no ``sandbox`` or ``demo``
    command."""
    return importlib.util.find_spec(package) is not None


# --- the command line --------------------------------------------------------------------------------

SYSTEM = argument("system", "crm (AMIS CRM) or acct (AMIS Kế toán)", type=click.Choice(SYSTEM_NAMES))


def _port(default: str) -> click.Option:
    return option("--port", type=PORT, default=None, help=f"{default}; 0 takes a free port (printed)")


add("worker", WorkerSettings, _worker, "run the stream processor (a faust worker)")
add(
    "tables",
    WorkerSettings,
    _tables,
    "the processor's state",
    argument(
        "action",
        "migrate: copy the faust tables of a deployment from before 2026-12 to the state changelog, "
        "once, between stopping the old workers and starting the new (docs/deploy.md)",
        type=click.Choice(["migrate"]),
    ),
    broker=True,
)
add(
    "kafka",
    OpsSettings,
    _kafka,
    "the local Apache Kafka broker on loopback (deploy/kafka/kafka.sh)",
    argument(
        "action",
        "start, stop, status (is it up, where), fetch (download Kafka only), purge (stop, delete its data)",
        type=click.Choice(["start", "stop", "status", "fetch", "purge"]),
    ),
    json_option(),
)
add(
    "topics",
    OpsSettings,
    _topics,
    "the contract's topics: create them (idempotently) or list them with their settings",
    argument(
        "action",
        "create: every topic of the contract that is missing; list: each topic, its role and settings",
        type=click.Choice(["create", "list"]),
    ),
    json_option(),
    broker=lambda args: args.action == "create",
)
add(
    "matrix",
    ServiceSettings,
    _matrix,
    "the rule table",
    option("--markdown", is_flag=True, help="as docs/matrix.md"),
    json_option(),
)
add(
    "contract",
    ServiceSettings,
    _contract,
    "docs/contract/: the AsyncAPI document and JSON Schemas of the contract",
    argument(
        "action",
        "generate: write them from the code and render the HTML page; check: which files are stale; "
        "validate: run `asyncapi validate` on the document (deploy/tools.sh installs the AsyncAPI CLI)",
        type=click.Choice(["generate", "check", "validate"]),
    ),
    option("--no-html", is_flag=True, help="generate: without the HTML page"),
)
add(
    "tenant",
    OpsSettings,
    _tenant,
    "tenant settings on config.tenants, as JSON",
    argument(
        "action",
        "set: check and publish the tenant's settings; get: one tenant's; list: every tenant's",
        type=click.Choice(["set", "get", "list"]),
    ),
    argument("tenant", "the tenant (set, get)", required=False),
    option(
        "--order-target",
        type=click.Choice(list(ORDER_TARGETS)),
        default=None,
        help="set: what a CRM order becomes in accounting",
    ),
    option(
        "--file",
        "settings_file",
        metavar="FILE",
        help="set: the tenant's whole sync settings from a TOML or JSON file (docs/sync-settings.md)",
    ),
)
add_operator_commands()  # reconcile, lag, dlq list|show|replay, backfill (cli/operator.py)
add_whatif_command()  # whatif (cli/whatif.py)
add_history_commands()  # history, and explain its old name (cli/history.py)
add("connector", ConnectorServiceSettings, _connector, "apply commands.<system> to the system's API", SYSTEM)
add(
    "capture",
    CaptureSettings,
    _capture,
    "capture a system's changes (polling, ACT callbacks) into cdc.*",
    SYSTEM,
)
if _installed("sandboxes"):  # not in the production image (deploy/Dockerfile)
    from sandboxes.settings import SandboxSettings

    add(
        "sandbox",
        SandboxSettings,
        _sandbox,
        "serve a sandbox of a system (its public API, labelled extensions)",
        SYSTEM,
        _port("default 8081 (crm) / 8082 (acct)"),
    )
add(
    "webhooks",
    WebhookSettings,
    _webhooks,
    "receive signed webhooks and produce change events",
    _port("its public port; default LIENTHONG_WEBHOOK_PORT (8090)"),
)
add(
    "dashboard",
    OpsSettings,
    _dashboard,
    "serve the operator's page (docs/dashboard.md)",
    option("--port", type=PORT, default=8080, show_default=True, help="its port; 0 takes a free port (printed)"),
    option(
        "--scrape",
        multiple=True,
        metavar="URL",
        help="a service's /metrics to read (repeat)",
    ),
    option("--interval", type=SECONDS, default=5.0, show_default=True, help="seconds between two looks"),
    option(
        "--whatif",
        multiple=True,
        metavar="FILE",
        help="a saved `lienthong whatif --json` report to show at /whatif/N (repeat)",
    ),
)
if _installed("demo"):  # not in the production image (deploy/Dockerfile)
    from demo.settings import DemoSettings

    add(
        "demo",
        DemoSettings,
        _demo,
        "broker, worker, sandboxes, connectors and a scripted business day",
        option("--tenant", default="cty-demo", show_default=True, help="the demo's tenant"),
        option("--crm-port", type=PORT, default=8081, show_default=True, help="the CRM sandbox's port"),
        option("--acct-port", type=PORT, default=8082, show_default=True, help="the accounting sandbox's port"),
        option("--dashboard-port", type=PORT, default=8080, show_default=True, help="the operator's page's port"),
        option("--exit", is_flag=True, help="stop after the business day instead of running on"),
    )


def parse_command(argv: list[str] | None = None) -> Args | int:
    """The ``Args`` of a command line (or the exit status of ``--help``, ``--version``): what ``main``
    runs, and what tests read a command's settings class and parameters from."""
    return parse(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except click.UsageError as exc:
        print(usage_error(exc) or exc.format_message(), file=sys.stderr)
        return USER_ERROR
    except click.Abort:
        return INTERRUPTED
    if isinstance(args, int):
        return args
    from common.logs import setup_logging

    try:
        given: dict[str, object] = {}
        if args.bootstrap_server and "kafka" in args.settings.model_fields:
            # -b says where the broker is: over LIENTHONG_BOOTSTRAP_SERVERS and LIENTHONG_KAFKA_PORT both
            given["kafka"] = read_settings(KafkaSettings, bootstrap_servers=args.bootstrap_server, kafka_port=None)
        settings = read_settings(args.settings, **given)
        # one handler for every logger of the service (faust, aiokafka and librdkafka included)
        service = "-".join([args.command, *([args.system] if hasattr(args, "system") else [])])
        setup_logging(settings.log, service=service)
        if args.needs_broker:
            problem = _broker_problem(getattr(settings, "kafka"))  # noqa: B009  (a command with a broker has one)
            if problem is not None:
                print(f"lienthong {_named(args)}: {problem}", file=sys.stderr)
                return USER_ERROR
        return args.func(args, settings)
    except InvalidSettings as exc:  # the command's settings; the demo reads its connectors' as it starts them
        print(_invalid_settings_message(args, exc), file=sys.stderr)
        return USER_ERROR
    except CannotListen as exc:  # a service's port (or the worker's /readyz port) is taken
        move = _move(args, settings, exc.port)
        print(f"lienthong {_named(args)}: {exc}: stop that process, or {move}", file=sys.stderr)
        return USER_ERROR
    except BrokenPipeError:  # `lienthong matrix --json | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would raise again
        return 0
    except KeyboardInterrupt:  # Ctrl-C in a one-shot command (a service stops on SIGINT and exits 0)
        print(f"lienthong {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


def _broker_problem(kafka: KafkaSettings) -> str | None:
    from ops.admin import broker_problem

    # librdkafka's own retry lines (`Connect to … failed` every few milliseconds) would bury the one line
    clients = logging.getLogger("librdkafka")
    level = clients.level
    clients.setLevel(logging.CRITICAL)
    try:
        return broker_problem(kafka)
    finally:
        clients.setLevel(level)


def _said_if_no_broker(kafka: KafkaSettings, service: str) -> None:
    """A service that waits for the broker (connector, capture, webhooks) says once, soon after it starts,
    that none answers yet, and what to do; it starts meanwhile and waits as before (its /readyz says not
    ready). The check runs beside it, so that it starts no later than it did."""
    import threading

    from ops.admin import broker_problem

    def check() -> None:
        problem = broker_problem(kafka)
        if problem is not None:
            logging.getLogger("lienthong").warning("%s; %s waits for it (its /readyz: not ready)", problem, service)

    threading.Thread(target=check, name="broker-check", daemon=True).start()


def _named(args: Args) -> str:
    return " ".join([args.command, *([args.system] if hasattr(args, "system") else [])])


def _move(args: Args, settings: ServiceSettings, port: int) -> str:
    """What moves a service off ``port``: its --port, or the setting that says it."""
    if getattr(args, "port", None) == port:
        return "give --port another port (0: a free one)"
    system = getattr(args, "system", "")
    # the system's own first (LIENTHONG_ACCT_CONNECTOR_PORT for `connector acct`)
    for name in sorted(type(settings).model_fields, key=lambda name: not (system and name.startswith(system))):
        if name.endswith("port") and getattr(settings, name) == port:
            return f"set {env_name(name)} to a free port"
    return "move it to a free port (docs/operations.md lists the port settings)"


def _invalid_settings_message(args: Args, exc: InvalidSettings) -> str:
    """What the command says of invalid settings: one line, every problem naming its variable."""
    return (
        f"lienthong {_named(args)}: invalid setting(s): {'; '.join(exc.problems)} "
        "(fix the LIENTHONG_* environment: docs/operations.md lists every setting)"
    )


if __name__ == "__main__":
    sys.exit(main())
