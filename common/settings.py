"""All run-time settings of lienthong: one pydantic-settings object, env prefix ``LIENTHONG_``.

Read once, in ``create_app()`` or a CLI command, never at import time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OrderTarget = Literal["sale_order", "contract"]


class CrmTenant(BaseModel):
    """One company's AMIS CRM API access: the AppID typed in CRM's API settings and its secret."""

    client_id: str
    client_secret: SecretStr


class AcctTenant(BaseModel):
    """One company's AMIS Kế toán connection: the access code its admin generated, and the
    partner-side company code (echoed back in ACT's callbacks; the tax code is recommended)."""

    access_code: SecretStr
    org_company_code: str


class ConnectorTenant(BaseModel):
    """One tenant of the older ``LIENTHONG_CONNECTOR_CREDENTIALS``: CRM's AppID and secret, or ACT's app id and
    connection (access) code. The secrets are SecretStr; keys not listed here are ignored."""

    client_id: str | None = None
    client_secret: SecretStr | None = None
    app_id: str | None = None
    connection_code: SecretStr | None = None
    org_company_code: str | None = None


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must not print the environment it read (passwords included)
    model_config = SettingsConfigDict(env_prefix="LIENTHONG_", extra="ignore", hide_input_in_errors=True)

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, host:port[,host:port]; loopback by default.",
    )
    kafka_port: int | None = Field(
        None,
        ge=1,
        le=65534,
        description="Port of the local broker (lienthong kafka start, deploy/kafka/kafka.sh). Set alone, every "
        "service follows it (bootstrap servers 127.0.0.1:<port>); set with loopback bootstrap servers of another "
        "port, it is refused.",
    )
    # --- Kafka transport security (common/kafka_config.py turns these into every client's config) -------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client talks to the brokers: PLAINTEXT (loopback only), SSL (TLS), "
        "SASL_PLAINTEXT or SASL_SSL (a user name and password, over TLS for SASL_SSL). SECURITY.md.",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism of SASL_PLAINTEXT / SASL_SSL."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name (SASL_PLAINTEXT / SASL_SSL).")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password; never logged.")
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates; unset: the system's CAs."
    )
    kafka_ssl_certfile: Path | None = Field(None, description="PEM client certificate (mutual TLS); with keyfile.")
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM private key of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of the key file; never logged.")
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host connected to (leave on in production)."
    )
    app_id: str = Field("lienthong", description="Faust app id: consumer group and table changelog prefix.")
    topic_prefix: str = Field(
        "",
        description="Prepended to every contract topic name (e.g. 'test-1a2b.'); empty in production. "
        "Tests use a fresh prefix per test so that each one has fresh topics.",
    )
    topic_partitions: int = Field(6, ge=1, description="Partitions of every topic the project creates.")
    topic_replication_factor: int = Field(1, ge=1, description="Replication factor of every topic the project creates.")
    store: str = Field("rocksdb://", description="Faust table store: rocksdb:// (durable) or memory:// (tests).")
    data_dir: Path = Field(Path("var/lienthong"), description="Where the worker keeps its RocksDB tables.")
    rocksdb_memtables_mb: int = Field(
        32,
        ge=4,
        description="Memory for recent table writes not yet on disk (RocksDB memtables), in MB, shared by "
        "every table and partition of a worker (docs/state.md, 'Memory').",
    )
    rocksdb_block_cache_mb: int = Field(
        32,
        ge=1,
        description="Read cache of the tables (RocksDB block cache), in MB, shared by every table and "
        "partition of a worker (docs/state.md, 'Memory').",
    )
    consumer_fetch_kb: int = Field(
        256,
        ge=64,
        description="What the worker's consumer fetches ahead per partition, in KB (faust's consumer_max_fetch_size): "
        "the read-ahead a worker holds in memory is about this times its partitions (docs/state.md, 'Memory').",
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        description="glibc malloc arenas of the worker (0: glibc's default of 8 per core); few arenas keep the "
        "memory RocksDB's and the Kafka clients' threads free from growing (docs/state.md, 'Memory').",
    )
    global_tables_max_wait: float = Field(
        30.0,
        ge=0,
        description="After a rebalance, how long a worker waits for its global tables to read their changelogs "
        "before it decides again (docs/state.md); past that it decides with what it has, with a warning.",
    )
    web_enabled: bool = Field(
        True, description="Serve the worker's /metrics, /healthz and /readyz (docs/operations.md)."
    )
    web_port: int = Field(6066, ge=0, le=65535, description="Port of the worker's /metrics, /healthz and /readyz.")
    web_host: str = Field(
        "127.0.0.1", description="Address every service binds its HTTP port to (0.0.0.0 in a container)."
    )
    log_level: str = "info"
    log_format: Literal["auto", "json", "text"] = Field(
        "auto",
        description="Log lines as JSON objects or human-readable text; auto: text on a terminal, JSON otherwise "
        "(common/logs.py, docs/deploy.md).",
    )
    commit_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between offset commits (work since the last commit is redone after a crash).",
    )
    group_instance_id: str | None = Field(
        None,
        description="A stable name of this worker in its consumer group (static membership, e.g. the pod name of "
        "a StatefulSet): a worker restarted under the same name gets its partitions back at once instead of "
        "after the session timeout. Unset: a new member each start.",
    )
    session_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds without a heartbeat before the group drops a worker and gives its "
        "partitions to the others (a killed worker's partitions wait this long).",
    )
    batch_size: int = Field(
        1000, ge=1, le=4096, description="Most events an agent decides at once (their outputs are awaited together)."
    )
    batch_wait: float = Field(
        0.1,
        gt=0,
        description="Seconds an idle agent waits for events before checking whether it should stop "
        "(a batch is whatever arrived while the previous one was decided; an event at an idle agent goes at once).",
    )
    max_message_bytes: int = Field(
        1_000_000,
        ge=10_000,
        description="Largest message the processor writes (the broker's max.message.bytes or less); an event "
        "whose outputs or state would be larger is dead-lettered (error.kind too_large).",
    )
    delivery_timeout: float = Field(
        300.0, gt=0, description="Seconds the producer keeps retrying a message before the worker gives up and stops."
    )
    # --- connectors, sandboxes, webhooks (JSON in the environment for the dict settings) ---------
    crm_url: str = Field("http://127.0.0.1:8081", description="Base URL of the CRM API (or its sandbox).")
    acct_url: str = Field("http://127.0.0.1:8082", description="Base URL of the accounting API (or its sandbox).")
    connector_credentials: dict[str, ConnectorTenant] = Field(
        default_factory=dict,
        description='tenant -> {"client_id", "client_secret"} (CRM) or '
        '{"app_id", "connection_code"} (accounting), e.g. LIENTHONG_CONNECTOR_CREDENTIALS=\'{"cty-abc": {...}}\'; '
        "the secret and the code are never logged.",
    )
    connector_concurrency: int = Field(8, ge=1, description="Commands in flight per tenant.")
    connector_rate: float = Field(50.0, gt=0, description="API requests per second per tenant.")
    sandbox_credentials: SecretStr = Field(
        SecretStr("{}"),
        description="A sandbox's accepted credentials, JSON: CRM {client_id: tenant, "
        "'<client_id>:secret': secret}; accounting {'<app_id>:<access_code>': tenant}. Secret as a whole (access "
        "codes are keys): read it with sandbox_logins.",
    )
    sandbox_admin_token: SecretStr | None = Field(
        None,
        description="The token a sandbox's /sandbox/... routes (test controls, an accountant's screens) need, as "
        "'Authorization: Bearer <token>'; unset: a random one made at start and printed once. SECURITY.md.",
    )
    sandbox_faults: dict[str, float | int | None] = Field(
        default_factory=dict,
        description="Fault injection of a sandbox (sandboxes.faults.FaultConfig fields).",
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="'<system>:<tenant>' -> HMAC secret; never logged."
    )
    default_order_target: OrderTarget = Field(
        "sale_order", description="What a CRM order becomes in accounting when the tenant has no setting."
    )
    # --- the real AMIS APIs: connectors and capture services (docs/going-live.md) --------------------
    crm_credentials: dict[str, CrmTenant] = Field(
        default_factory=dict,
        description='tenant -> {"client_id", "client_secret"}: the AppID and secret of CRM\'s API settings '
        "(Thiết lập → Dành cho nhà phát triển → API). Used by the CRM connector and CRM capture.",
    )
    acct_app_id: str = Field(
        "",
        description="The app_id MISA issued to this integration for the ACT Open API; also the key ACT signs "
        "callbacks with.",
    )
    acct_credentials: dict[str, AcctTenant] = Field(
        default_factory=dict,
        description='tenant -> {"access_code", "org_company_code"}: the company\'s connection code (Thiết lập → '
        "Kết nối ứng dụng → API kết nối) and the company code sent at connect.",
    )
    ledger_dir: Path | None = Field(
        None,
        description="Where the connectors keep the ledger of their recent writes and awaited callbacks, shared "
        "with the capture services (same host or shared volume). Default: <data_dir>/connectors.",
    )
    callback_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds an accounting proposal waits for ACT's callback before the connector pulls "
        "get_call_back_detail_error (and saves again if the result is not there).",
    )
    token_renew_before: float = Field(
        600.0, ge=0, description="A CRM or ACT token is fetched again this many seconds before it ends."
    )
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
        8091, ge=0, le=65535, description="Port of the accounting capture service's callback receiver (/callback)."
    )
    crm_capture_port: int = Field(
        8092, ge=0, le=65535, description="Port of the CRM capture service's /metrics, /healthz and /readyz."
    )
    crm_connector_port: int = Field(
        8093, ge=0, le=65535, description="Port of the CRM connector's /metrics, /healthz and /readyz."
    )
    acct_connector_port: int = Field(
        8094, ge=0, le=65535, description="Port of the accounting connector's /metrics, /healthz and /readyz."
    )
    acct_callback_url: str | None = Field(
        None,
        description="Accounting sandbox only: where it posts its callbacks (the capture service's /callback). "
        "A real tenant's callback URL is registered with MISA.",
    )

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Settings:
        """Combinations a client would only fail on later (or hang on): said at start-up, with what to set."""
        protocol, problems = self.kafka_security_protocol, []
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username:
                problems.append(f"LIENTHONG_KAFKA_SECURITY_PROTOCOL={protocol} needs LIENTHONG_KAFKA_SASL_USERNAME")
            if self.kafka_sasl_password is None or not self.kafka_sasl_password.get_secret_value():
                problems.append(f"LIENTHONG_KAFKA_SECURITY_PROTOCOL={protocol} needs LIENTHONG_KAFKA_SASL_PASSWORD")
        elif self.kafka_sasl_username or self.kafka_sasl_password is not None:
            problems.append(
                f"a SASL user or password is set but LIENTHONG_KAFKA_SECURITY_PROTOCOL={protocol}: "
                "set it to SASL_SSL (or SASL_PLAINTEXT), or unset LIENTHONG_KAFKA_SASL_*"
            )
        tls_files = {
            "LIENTHONG_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "LIENTHONG_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "LIENTHONG_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and any(tls_files.values()):
            problems.append(
                f"TLS files are set but LIENTHONG_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
                "set it to SSL or SASL_SSL, or unset LIENTHONG_KAFKA_SSL_*"
            )
        for variable, path in tls_files.items():
            if path is not None and not path.is_file():
                problems.append(f"{variable}={path}: no such file")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            problems.append("LIENTHONG_KAFKA_SSL_CERTFILE and LIENTHONG_KAFKA_SSL_KEYFILE go together (mutual TLS)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _one_local_broker_port(self) -> Settings:
        """LIENTHONG_KAFKA_PORT starts the local broker; the services must connect to that same port."""
        if self.kafka_port is None:
            return self
        if "bootstrap_servers" not in self.model_fields_set:
            self.bootstrap_servers = f"127.0.0.1:{self.kafka_port}"
            return self
        host, _, port = self.bootstrap_servers.split(",")[0].strip().rpartition(":")
        if host in ("127.0.0.1", "localhost", "[::1]") and port != str(self.kafka_port):
            raise ValueError(
                f"LIENTHONG_KAFKA_PORT={self.kafka_port} but LIENTHONG_BOOTSTRAP_SERVERS={self.bootstrap_servers}: "
                "the local broker would listen on one port and the services connect to another. Set only "
                "LIENTHONG_KAFKA_PORT (the services follow it), or give both the same port"
            )
        return self

    @field_validator("sandbox_credentials")
    @classmethod
    def _sandbox_credentials_are_json_strings(cls, value: SecretStr) -> SecretStr:
        _logins(value)
        return value

    @field_validator("sandbox_admin_token")
    @classmethod
    def _admin_token_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "LIENTHONG_SANDBOX_ADMIN_TOKEN must be at least 16 characters (e.g. python -c "
                "'import secrets; print(secrets.token_urlsafe(24))'), or unset for a random one"
            )
        return value

    @property
    def sandbox_logins(self) -> dict[str, str]:
        """``LIENTHONG_SANDBOX_CREDENTIALS`` parsed: what a sandbox accepts, in its own layout (empty: unset)."""
        return _logins(self.sandbox_credentials)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic_name_part(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError(f"LIENTHONG_TOPIC_PREFIX={value!r}: only letters, digits, '.', '_' and '-' are allowed")
        return value

    @property
    def broker_url(self) -> str:
        """The bootstrap servers as faust wants them (aiokafka driver)."""
        return ";".join(f"kafka://{server.strip()}" for server in self.bootstrap_servers.split(","))


def _logins(value: SecretStr) -> dict[str, str]:
    """A JSON object of strings held in a SecretStr; the error never repeats the value."""
    try:
        parsed = json.loads(value.get_secret_value() or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        raise ValueError(
            "LIENTHONG_SANDBOX_CREDENTIALS must be a JSON object of strings: CRM "
            '{"<client_id>": "<tenant>", "<client_id>:secret": "<secret>"}, accounting '
            '{"<app_id>:<access_code>": "<tenant>"}'
        )
    return parsed
