"""Each service reads its own settings class, from the same LIENTHONG_* variables as before the split,
and a problem is one line naming the variable, never a secret's value.

(The secrets' side of it is tests/test_secrets_not_logged.py; docs/operations.md's section is generated
from the same classes, and checked here.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from capture.settings import WebhookSettings
from cli.main import main
from cli.settings_doc import REGENERATE, current, services
from common.settings import (
    FlatEnvironment,
    InvalidSettings,
    KafkaSettings,
    block_type,
    env_name,
    read_settings,
    variables,
)
from connectors.settings import ConnectorServiceSettings
from sandboxes.settings import SandboxSettings
from streams.settings import WorkerSettings

# Every variable the one ``Settings`` of common/settings.py read before it was split into a class per
# service (59 fields): what users set must keep working, under the same names.
VARIABLES_BEFORE_THE_SPLIT = [
    "LIENTHONG_BOOTSTRAP_SERVERS",
    "LIENTHONG_KAFKA_PORT",
    "LIENTHONG_KAFKA_SECURITY_PROTOCOL",
    "LIENTHONG_KAFKA_SASL_MECHANISM",
    "LIENTHONG_KAFKA_SASL_USERNAME",
    "LIENTHONG_KAFKA_SASL_PASSWORD",
    "LIENTHONG_KAFKA_SSL_CAFILE",
    "LIENTHONG_KAFKA_SSL_CERTFILE",
    "LIENTHONG_KAFKA_SSL_KEYFILE",
    "LIENTHONG_KAFKA_SSL_KEY_PASSWORD",
    "LIENTHONG_KAFKA_SSL_CHECK_HOSTNAME",
    "LIENTHONG_APP_ID",
    "LIENTHONG_TOPIC_PREFIX",
    "LIENTHONG_TOPIC_PARTITIONS",
    "LIENTHONG_TOPIC_REPLICATION_FACTOR",
    "LIENTHONG_STORE",
    "LIENTHONG_DATA_DIR",
    "LIENTHONG_ROCKSDB_MEMTABLES_MB",
    "LIENTHONG_ROCKSDB_BLOCK_CACHE_MB",
    "LIENTHONG_CONSUMER_FETCH_KB",
    "LIENTHONG_MALLOC_ARENAS",
    "LIENTHONG_GLOBAL_TABLES_MAX_WAIT",
    "LIENTHONG_WEB_ENABLED",
    "LIENTHONG_WEB_PORT",
    "LIENTHONG_WEB_HOST",
    "LIENTHONG_LOG_LEVEL",
    "LIENTHONG_LOG_FORMAT",
    "LIENTHONG_COMMIT_INTERVAL",
    "LIENTHONG_GROUP_INSTANCE_ID",
    "LIENTHONG_SESSION_TIMEOUT",
    "LIENTHONG_BATCH_SIZE",
    "LIENTHONG_BATCH_WAIT",
    "LIENTHONG_MAX_MESSAGE_BYTES",
    "LIENTHONG_DELIVERY_TIMEOUT",
    "LIENTHONG_CRM_URL",
    "LIENTHONG_ACCT_URL",
    "LIENTHONG_CONNECTOR_CREDENTIALS",
    "LIENTHONG_CONNECTOR_CONCURRENCY",
    "LIENTHONG_CONNECTOR_RATE",
    "LIENTHONG_SANDBOX_CREDENTIALS",
    "LIENTHONG_SANDBOX_ADMIN_TOKEN",
    "LIENTHONG_SANDBOX_FAULTS",
    "LIENTHONG_WEBHOOK_SECRETS",
    "LIENTHONG_DEFAULT_ORDER_TARGET",
    "LIENTHONG_CRM_CREDENTIALS",
    "LIENTHONG_ACCT_APP_ID",
    "LIENTHONG_ACCT_CREDENTIALS",
    "LIENTHONG_LEDGER_DIR",
    "LIENTHONG_CALLBACK_TIMEOUT",
    "LIENTHONG_TOKEN_RENEW_BEFORE",
    "LIENTHONG_CAPTURE_POLL_INTERVAL",
    "LIENTHONG_CAPTURE_OVERLAP",
    "LIENTHONG_CAPTURE_DELETION_SCAN_EVERY",
    "LIENTHONG_CAPTURE_EXTENSIONS",
    "LIENTHONG_CAPTURE_PORT",
    "LIENTHONG_CRM_CAPTURE_PORT",
    "LIENTHONG_CRM_CONNECTOR_PORT",
    "LIENTHONG_ACCT_CONNECTOR_PORT",
    "LIENTHONG_ACCT_CALLBACK_URL",
]

# Variables of faust's consumer and tables that the processing loop no longer has (issue 21): a user who
# still sets them is not refused (unknown LIENTHONG_* variables are ignored), and no service reads them.
VARIABLES_RETIRED = [
    "LIENTHONG_GLOBAL_TABLES_MAX_WAIT",  # no global tables, no catch-up
    "LIENTHONG_COMMIT_INTERVAL",  # offsets are committed with each batch's transaction
    "LIENTHONG_BATCH_WAIT",  # a batch is what the consumer has, taken at once
]

# Variables added since, each with its service: read by it, and by nothing else before.
VARIABLES_ADDED_SINCE = [
    "LIENTHONG_ORDER_MAX_WAIT",  # the worker: how long a change may be held for the inputs to pass its time
    "LIENTHONG_TRANSACTION_TIMEOUT",  # the worker: its batches' transactions
    "LIENTHONG_ACCT_BRANCH_ID",  # the accounting connector: the ACT branch each tenant's proposals are booked to
    "LIENTHONG_CONNECTOR_EXTENSIONS",  # the connectors: write the sandboxes' extensions (off: none)
    "LIENTHONG_SANDBOX_CRM_ANSWERS",  # the CRM sandbox: which of the answers the reference allows it gives
    "LIENTHONG_SANDBOX_ACCT_ANSWERS",  # the accounting sandbox: its answer where the ACT reference says [UNK]
    "LIENTHONG_PUBLIC_HOST",  # the public listeners (ACT's callbacks, webhooks): apart from /metrics and probes
    "LIENTHONG_CALLBACK_PORT",  # the accounting capture: /callback alone, on its own port
    "LIENTHONG_WEBHOOK_PORT",  # the webhook receiver's public port (was --port alone)
    "LIENTHONG_WEBHOOK_METRICS_PORT",  # the webhook receiver's /metrics and probes
    "LIENTHONG_DASHBOARD_TOKEN",  # the operator's page: a token it can require
    "LIENTHONG_DASHBOARD_HOSTS",  # the operator's page: the Host names it answers
    "LIENTHONG_BROKER_TIMEOUT",  # the one wait of every one-shot command for a broker to answer
    "LIENTHONG_LEDGER_URL",  # a connector: the capture service's ledger API, so that replicas share a group
    "LIENTHONG_LEDGER_TOKEN",  # capture serves its ledger API with it, a connector sends it
    "LIENTHONG_CRM_LEDGER_PORT",  # the CRM capture service's ledger API
    "LIENTHONG_ACCT_LEDGER_PORT",  # the accounting capture service's ledger API
]

SECRET = "a-secret-value-5e1f0c9d"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch) -> Iterator[None]:
    """Only what a test sets: none of the LIENTHONG_* variables of the machine running the tests."""
    for name in [name for name in os.environ if name.startswith("LIENTHONG_")]:
        monkeypatch.delenv(name)
    yield


def looked_up(cls: Any) -> set[str]:
    """The environment variables ``cls`` looks up when it is read (its blocks' included): asked of the
    environment source pydantic-settings reads it with, not of our own account of it (``variables``)."""

    class Recording(dict):
        def get(self, key: Any, default: Any = None) -> Any:
            names.add(str(key).upper())
            return super().get(key, default)

    names: set[str] = set()
    source = FlatEnvironment(cls)
    source.env_vars = Recording()
    source()
    for field in cls.model_fields.values():
        block = block_type(field)
        if block is not None:
            names |= looked_up(block)
    return names


def test_every_variable_of_before_is_read_by_a_service_and_none_other():
    assert len(VARIABLES_BEFORE_THE_SPLIT) == len(set(VARIABLES_BEFORE_THE_SPLIT)) == 59
    read = {service: looked_up(service) for service in services()}
    for service, names in read.items():
        assert names == set(variables(service)), f"{service.__name__}: variables() says other names than it reads"
        outside = names - set(VARIABLES_BEFORE_THE_SPLIT) - set(VARIABLES_ADDED_SINCE)
        assert not outside, f"{service.__name__} reads {sorted(outside)}, which no user has ever set"
    unread = set(VARIABLES_BEFORE_THE_SPLIT + VARIABLES_ADDED_SINCE) - set().union(*read.values())
    unread -= set(VARIABLES_RETIRED)
    assert not set(VARIABLES_RETIRED) & set().union(*read.values()), "a retired variable is read again"
    assert not unread, f"no service reads {sorted(unread)} any more"


def test_a_block_is_read_from_its_variables_not_from_one_of_its_own_name(monkeypatch):
    for service in services():
        for name, field in service.model_fields.items():
            if block_type(field) is not None:
                monkeypatch.setenv(env_name(name), '{"bootstrap_servers": "elsewhere:1", "log_level": "debug"}')
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", "it-1.")
    worker = read_settings(WorkerSettings)
    assert worker.kafka.bootstrap_servers == "127.0.0.1:9092" and worker.log.log_level == "info"
    assert worker.kafka.topic_prefix == "it-1."


def test_a_variable_several_services_read_is_the_same_setting_in_each():
    seen: dict[str, tuple[str, Any]] = {}
    for service in services():
        for name, field in variables(service).items():
            said = (
                repr(field.annotation),
                repr(field.get_default(call_default_factory=True)),
                repr(field.metadata),
                field.description,
            )
            first = seen.setdefault(name, (service.__name__, said))
            assert first[1] == said, f"{name} is one setting in {first[0]} and another in {service.__name__}"


def test_every_setting_is_described():
    for service in services():
        for name, field in variables(service).items():
            assert field.description, f"{name} ({service.__name__}) has no description for docs/operations.md"


def test_docs_operations_lists_the_settings_of_every_service():
    assert current(), f"docs/operations.md's settings are stale: run `{REGENERATE}`"


# --- a problem is one line naming the variable -------------------------------------------------------


def problems(cls: Any, **environment: str) -> list[str]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        with pytest.raises(InvalidSettings) as raised:
            read_settings(cls)
    return raised.value.problems


def test_a_value_out_of_its_choices_names_the_variable_and_what_it_found():
    assert problems(KafkaSettings, LIENTHONG_KAFKA_SECURITY_PROTOCOL="bogus") == [
        "LIENTHONG_KAFKA_SECURITY_PROTOCOL: input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL' "
        "(found 'bogus')"
    ]


def test_every_problem_of_a_service_and_its_blocks_is_said_at_once_a_line_each():
    said = problems(
        WorkerSettings,
        LIENTHONG_KAFKA_SECURITY_PROTOCOL="bogus",
        LIENTHONG_ROCKSDB_MEMTABLES_MB="2",
        LIENTHONG_BATCH_SIZE="0",
        LIENTHONG_WEB_PORT="web",
        LIENTHONG_LOG_FORMAT="xml",
    )
    assert sorted(said) == [
        "LIENTHONG_BATCH_SIZE: input should be greater than or equal to 1 (found '0')",
        "LIENTHONG_KAFKA_SECURITY_PROTOCOL: input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL' "
        "(found 'bogus')",
        "LIENTHONG_LOG_FORMAT: input should be 'auto', 'json' or 'text' (found 'xml')",
        "LIENTHONG_ROCKSDB_MEMTABLES_MB: input should be greater than or equal to 4 (found '2')",
        "LIENTHONG_WEB_PORT: input should be a valid integer, unable to parse string as an integer (found 'web')",
    ]


def test_a_check_of_several_variables_says_each_problem_on_its_line():
    assert problems(WorkerSettings, LIENTHONG_KAFKA_SECURITY_PROTOCOL="SASL_SSL") == [
        "LIENTHONG_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs LIENTHONG_KAFKA_SASL_USERNAME",
        "LIENTHONG_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs LIENTHONG_KAFKA_SASL_PASSWORD",
    ]
    assert problems(KafkaSettings, LIENTHONG_KAFKA_PORT="19999", LIENTHONG_BOOTSTRAP_SERVERS="127.0.0.1:9092")[
        0
    ].startswith("LIENTHONG_KAFKA_PORT=19999 but LIENTHONG_BOOTSTRAP_SERVERS=127.0.0.1:9092: ")


def test_a_check_that_names_its_variable_is_not_named_twice():
    (said,) = problems(KafkaSettings, LIENTHONG_TOPIC_PREFIX="has space")
    assert said == "LIENTHONG_TOPIC_PREFIX='has space': only letters, digits, '.', '_' and '-' are allowed"


def test_a_place_inside_a_json_variable_is_named():
    (said,) = problems(ConnectorServiceSettings, LIENTHONG_CRM_CREDENTIALS=json.dumps({"cty-a": {"client_id": "x"}}))
    assert said == "LIENTHONG_CRM_CREDENTIALS: cty-a: client_secret: field required"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LIENTHONG_CRM_CREDENTIALS", json.dumps({"cty-a": {"client_id": "x", "client_secret": [SECRET]}})),
        ("LIENTHONG_CRM_CREDENTIALS", json.dumps({"cty-a": {"client_secret": SECRET}})),
        ("LIENTHONG_ACCT_CREDENTIALS", json.dumps({"cty-a": {"access_code": SECRET}})),
        ("LIENTHONG_CONNECTOR_CREDENTIALS", json.dumps({"cty-a": {"connection_code": [SECRET]}})),
        ("LIENTHONG_CRM_CREDENTIALS", '{"cty-a": {"client_secret": "' + SECRET + '"'),  # not JSON
        ("LIENTHONG_KAFKA_SASL_PASSWORD", SECRET),  # set without SASL
    ],
)
def test_a_problem_with_a_secret_never_shows_it(variable, value):
    said = "\n".join(problems(ConnectorServiceSettings, **{variable: value}))
    assert said.startswith("LIENTHONG_") and SECRET not in said


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        (WebhookSettings, "LIENTHONG_WEBHOOK_SECRETS", json.dumps({"crm:cty-a": [SECRET]})),
        (SandboxSettings, "LIENTHONG_SANDBOX_ADMIN_TOKEN", SECRET[:10]),
        (SandboxSettings, "LIENTHONG_SANDBOX_CREDENTIALS", json.dumps({"app:secret": [SECRET]})),
    ],
)
def test_a_secret_of_another_service_is_never_shown_either(service, variable, value):
    (said,) = problems(service, **{variable: value})
    assert said.startswith(variable) and SECRET[:10] not in said


def test_a_json_variable_that_is_not_json_is_named():
    (said,) = problems(SandboxSettings, LIENTHONG_SANDBOX_FAULTS="{error_rate: 1}")
    assert said.startswith("LIENTHONG_SANDBOX_FAULTS: not a JSON value (")


def test_the_command_says_the_problems_and_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("LIENTHONG_KAFKA_SECURITY_PROTOCOL", "bogus")
    monkeypatch.setenv("LIENTHONG_TOPIC_PARTITIONS", "0")
    assert main(["topics", "list"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "lienthong topics: invalid setting(s): "
        "LIENTHONG_KAFKA_SECURITY_PROTOCOL: input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL' "
        "(found 'bogus'); "
        "LIENTHONG_TOPIC_PARTITIONS: input should be greater than or equal to 1 (found '0') "
        "(fix the LIENTHONG_* environment: docs/operations.md lists every setting)",
    ]
    assert "validation error" not in err and "pydantic" not in err


def test_a_command_reads_only_the_settings_of_its_service(monkeypatch, capsys):
    monkeypatch.setenv("LIENTHONG_KAFKA_SECURITY_PROTOCOL", "bogus")  # no Kafka client in `lienthong matrix`
    assert main(["matrix"]) == 0
    monkeypatch.setenv("LIENTHONG_LOG_FORMAT", "xml")  # but every command logs
    assert main(["matrix"]) == 2
    assert "LIENTHONG_LOG_FORMAT: input should be 'auto', 'json' or 'text' (found 'xml')" in capsys.readouterr().err
