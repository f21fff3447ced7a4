"""The settings of lienthong's services, from the environment (``LIENTHONG_*``): a class per service.

Each service has a settings class of its own that holds only what it reads, in its own package: the
worker's ``streams/settings.py``, ``connectors/settings.py``, ``capture/settings.py`` (the capture
services and the webhook receiver), ``sandboxes/settings.py``, ``ops/settings.py`` (the operator's
commands) and ``demo/settings.py``. Here is what they share:

- the blocks a part of every service takes whole: ``KafkaSettings`` (the connection of every Kafka
  client, ``common/kafka_config.py``) and ``LogSettings`` (``common/logs.py``). A service's class holds
  a block as a field (``settings.kafka``), read from the same flat variables as every other field
  (``LIENTHONG_BOOTSTRAP_SERVERS``: a block adds nothing to the names), and hands it to the part that
  uses it;
- the definition of a variable that services of different packages read alike (``DataDirSetting``,
  ``WebHostSetting``, the AMIS tenants' credentials that the API clients use and the sandboxes accept).
  A variable read by several services is defined once, in the lowest package they all import, so that
  it has one type, default and check everywhere;
- ``read_settings(cls)``: a service's settings, read once by the service's builder (its command in
  ``cli/main.py``, ``streams.app.create_app``), never at import time. A problem is one line that names
  the environment variable (``InvalidSettings``), never a secret's value.

This module imports no service.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as UnreadableSetting

ENV_PREFIX = "LIENTHONG_"


class EnvSettings(BaseSettings):
    """Settings read from ``LIENTHONG_<FIELD>``: the base of every block and every service's class.

    A field whose type is itself an ``EnvSettings`` is a block: its fields are read from their own
    flat variables, and no ``LIENTHONG_<BLOCK>`` variable is read for it.
    """

    # hide_input_in_errors: a validation error must not print the environment it read (passwords included)
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # what is given, then the environment (no .env file or secrets directory is configured)
        return init_settings, FlatEnvironment(settings_cls)


class FlatEnvironment(EnvSettingsSource):
    """The environment, but nothing for a block field: a block reads its own variables."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if block_type(field) is not None:
            return None, field_name, False
        return super().get_field_value(field, field_name)


def block_type(field: FieldInfo) -> type[EnvSettings] | None:
    """The block class of a block field, None for a field read from its own variable."""
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, EnvSettings):
        return annotation
    return None


class Problems(ValueError):
    """Several problems found by one check (of several variables): each says what to set."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- what every Kafka client needs -----------------------------------------------------------------


class KafkaSettings(EnvSettings):
    """The Kafka connection.

    The cluster every Kafka client of every service connects to, and the topic prefix they share.
    """

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
    # --- transport security (common/kafka_config.py turns these into every client's config) ---------
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
    broker_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a one-shot command (topics create, lag, dlq, explain, backfill, ...) waits for the "
        "broker to answer before saying none does.",
    )
    topic_prefix: str = Field(
        "",
        description="Prepended to every contract topic name (e.g. 'test-1a2b.'); empty in production. "
        "Tests use a fresh prefix per test so that each one has fresh topics.",
    )

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> KafkaSettings:
        """Combinations a client would only fail on later (or hang on): said at start-up, with what to set."""
        protocol, problems = self.kafka_security_protocol, []
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username:
                problems.append(f"LIENTHONG_KAFKA_SECURITY_PROTOCOL={protocol} needs LIENTHONG_KAFKA_SASL_USERNAME")
            if self.kafka_sasl_password is None or not self.kafka_sasl_password.get_secret_value():
                problems.append(f"LIENTHONG_KAFKA_SECURITY_PROTOCOL={protocol} needs LIENTHONG_KAFKA_SASL_PASSWORD")
        elif self.kafka_sasl_username or self.kafka_sasl_password is not None:
            sasl = {
                "LIENTHONG_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
                "LIENTHONG_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            }
            problems.append(
                f"{' and '.join(name for name, value in sasl.items() if value)} set but "
                f"LIENTHONG_KAFKA_SECURITY_PROTOCOL={protocol}: set it to SASL_SSL (or SASL_PLAINTEXT), "
                "or unset LIENTHONG_KAFKA_SASL_*"
            )
        tls_files = {
            "LIENTHONG_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "LIENTHONG_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "LIENTHONG_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and any(tls_files.values()):
            problems.append(
                f"{' and '.join(name for name, path in tls_files.items() if path)} set but "
                f"LIENTHONG_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
                "set it to SSL or SASL_SSL, or unset LIENTHONG_KAFKA_SSL_*"
            )
        for variable, path in tls_files.items():
            if path is not None and not path.is_file():
                problems.append(f"{variable}={path}: no such file")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            problems.append("LIENTHONG_KAFKA_SSL_CERTFILE and LIENTHONG_KAFKA_SSL_KEYFILE go together (mutual TLS)")
        if problems:
            raise Problems(problems)
        return self

    @model_validator(mode="after")
    def _one_local_broker_port(self) -> KafkaSettings:
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

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic_name_part(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError(f"LIENTHONG_TOPIC_PREFIX={value!r}: only letters, digits, '.', '_' and '-' are allowed")
        return value


# --- what every service needs ----------------------------------------------------------------------


class LogSettings(EnvSettings):
    """Logging.

    How a service logs (``common.logs.setup_logging``).
    """

    log_level: str = Field("info", description="Lowest level logged: debug, info, warning, error or critical.")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto",
        description="Log lines as JSON objects or human-readable text; auto: text on a terminal, JSON otherwise "
        "(common/logs.py, docs/deploy.md).",
    )


class ServiceSettings(EnvSettings):
    """Commands that read only the log settings.

    Every service's settings class extends it: every command logs.
    """

    log: LogSettings = Field(default_factory=LogSettings)


#: LIENTHONG_WEB_HOST: every service that serves HTTP binds it.
WebHostSetting = Annotated[
    str, Field("127.0.0.1", description="Address every service binds its HTTP port to (0.0.0.0 in a container).")
]

#: LIENTHONG_PUBLIC_HOST: the listeners the internet reaches (ACT's callbacks, the webhook receiver) bind it; their
#: /metrics and probes stay on LIENTHONG_WEB_HOST's internal port.
PublicHostSetting = Annotated[
    str,
    Field(
        "127.0.0.1",
        description="Address the public listeners bind (the accounting capture's /callback port, the webhook "
        "receiver's port): what a reverse proxy or Ingress forwards to (0.0.0.0 in a container or pod). Their "
        "/metrics and probes are on another port, bound to LIENTHONG_WEB_HOST.",
    ),
]

#: LIENTHONG_DATA_DIR: every service that keeps files keeps them under it.
DataDirSetting = Annotated[
    Path,
    Field(
        Path("var/lienthong"),
        description="Where the services keep their files: the worker's RocksDB tables, the connectors' ledgers, "
        "the capture services' state, the webhook receiver's record versions, a sandbox's database, the operator's "
        "history index (lienthong history, the operator's page).",
    ),
]


# --- the AMIS tenants: what the API clients log in with and the sandboxes accept ----------------------


class CrmTenant(BaseModel):
    """One company's AMIS CRM API access: the AppID typed in CRM's API settings and its secret."""

    client_id: str
    client_secret: SecretStr


#: what a tenant's callback path secret may hold: it is a URL path segment, and long enough not to be guessed
CALLBACK_SECRET = re.compile(r"[A-Za-z0-9_-]{22,}")


class AcctTenant(BaseModel):
    """One company's AMIS Kế toán connection: the access code its admin generated, the partner-side
    company code (echoed back in ACT's callbacks; the tax code is recommended) and the secret of the
    company's own callback URL (``/callback/<callback_secret>``, registered with MISA for that company).

    ACT's callback signature is keyed with the app_id every tenant shares and ACT sends in clear, so
    only the path secret tells which company a callback is for (SECURITY.md). Without one the
    company's callbacks are not received, only pulled from ``get_call_back_detail_error``."""

    access_code: SecretStr
    org_company_code: str
    callback_secret: SecretStr | None = None

    @field_validator("callback_secret")
    @classmethod
    def _callback_secret_is_a_long_path_segment(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not CALLBACK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError(
                "callback_secret must be 22 or more of A-Z a-z 0-9 _ - (a URL path segment; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return value


#: LIENTHONG_CRM_CREDENTIALS
CrmCredentialsSetting = Annotated[
    dict[str, CrmTenant],
    Field(
        default_factory=dict,
        description='tenant -> {"client_id", "client_secret"}: the AppID and secret of CRM\'s API settings '
        "(Thiết lập → Dành cho nhà phát triển → API). Used by the CRM connector and CRM capture.",
    ),
]

#: LIENTHONG_ACCT_APP_ID
AcctAppIdSetting = Annotated[
    SecretStr,
    Field(
        SecretStr(""),
        description="The app_id MISA issued to this integration for the ACT Open API; also the key ACT signs "
        "callbacks with (ACT sends it in every callback: it proves no tenant); never logged.",
    ),
]

#: LIENTHONG_ACCT_CREDENTIALS
AcctCredentialsSetting = Annotated[
    dict[str, AcctTenant],
    Field(
        default_factory=dict,
        description='tenant -> {"access_code", "org_company_code", "callback_secret"}: the company\'s connection '
        "code (Thiết lập → Kết nối ứng dụng → API kết nối), the company code sent at connect, and the secret of "
        "the company's callback URL /callback/<callback_secret> registered with MISA (22+ of A-Z a-z 0-9 _ -). "
        "The code and the secret are never logged.",
    ),
]


# --- reading a service's settings ------------------------------------------------------------------

S = TypeVar("S", bound=EnvSettings)


class InvalidSettings(Exception):
    """The environment a service reads is invalid: one line per problem, each naming the variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read_settings(cls: type[S], **given: Any) -> S:
    """``cls`` read from the environment (fields in ``given`` as given): every problem of the service's
    own variables and of its blocks at once, as ``InvalidSettings``."""
    problems: list[str] = []
    values = dict(given)
    for name, field in cls.model_fields.items():
        block = block_type(field)
        if block is None or name in values:
            continue
        try:
            values[name] = read_settings(block)
        except InvalidSettings as exc:
            problems += exc.problems
            values[name] = block.model_construct()  # stands in, so that the service's own variables are checked too
    try:
        settings = cls(**values)
    except ValidationError as exc:
        problems += [problem for error in exc.errors(include_url=False) for problem in _said(cls, error)]
    except UnreadableSetting as exc:
        problems.append(_unreadable(exc))
    if problems:
        raise InvalidSettings(list(dict.fromkeys(problems)))
    return settings


def env_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name}".upper()


def variables(cls: type[EnvSettings]) -> dict[str, FieldInfo]:
    """Every environment variable ``cls`` reads (its blocks' included), in declaration order: its field."""
    found: dict[str, FieldInfo] = {}
    for name, field in cls.model_fields.items():
        block = block_type(field)
        if block is not None:
            found.update(variables(block))
        else:
            found[env_name(name)] = field
    return found


def holds_secret(annotation: Any) -> bool:
    """Whether a value of this type has a secret anywhere in it (a SecretStr, a model or mapping of them)."""
    if annotation is SecretStr:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(holds_secret(field.annotation) for field in annotation.model_fields.values())
    return any(holds_secret(argument) for argument in typing.get_args(annotation))


def _said(cls: type[EnvSettings], error: Any) -> list[str]:
    """One pydantic error as lines naming the variable (a check of several variables names them itself)."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, Problems):
        return list(cause.problems)
    message = _message(error["msg"])
    location = error["loc"]
    if not location:
        return [message]
    field = cls.model_fields.get(str(location[0]))
    variable = env_name(str(location[0]))
    if message.startswith(variable):  # the field's own check named it
        return [message]
    where = "".join(f"{part}: " for part in location[1:])
    value = error.get("input")
    shown = field is not None and not holds_secret(field.annotation) and isinstance(value, str | int | float | bool)
    return [f"{variable}: {where}{message}" + (f" (found {value!r})" if shown else "")]


def _message(text: str) -> str:
    for wrapper in ("Value error, ", "Assertion failed, "):
        text = text.removeprefix(wrapper)
    if text[:1].isupper() and text[1:2].islower():  # pydantic's "Input should be ..." inside a sentence
        text = text[0].lower() + text[1:]
    return text


def _unreadable(exc: UnreadableSetting) -> str:
    """pydantic-settings' error for a variable it could not parse (a JSON one that is not JSON): its
    message names the field, its cause says where the JSON breaks (never the value)."""
    named = re.search(r'field "(\w+)"', str(exc))
    if named is None:
        return str(exc)
    return f"{env_name(named.group(1))}: not a JSON value ({exc.__cause__})"
