"""A company's sync settings from a file: what a company's administrator writes, and each way it can be
wrong refused with one line naming the problem (``ops.settings_file``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.names import System
from ops.settings_file import load_settings_file
from streams.core.rules import RuleBook, load_rules
from streams.core.sync_settings import FieldMapping, SettingsError

T = "cty-a"

GOOD_TOML = """
order_target = "contract"
rules_off = ["PRD-1", "SO-13"]

[[field_mappings]]
system = "crm"
entity = "customer"
source_field = "custom_field5"
target_field = "address"

[[field_mappings]]
system = "acct"
entity = "customer"
source_field = "address"
target_field = "custom_field7"

[[field_mappings]]
system = "acct"
entity = "sale_order"
source_field = "status"
target_field = "custom_field9"
type = "choice"
values = { "not_started" = "Chưa bắt đầu", "in_progress" = "Đang thực hiện", "completed" = "Hoàn thành" }
"""


@pytest.fixture(scope="module")
def rules() -> RuleBook:
    return load_rules()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_toml_file_becomes_version_2_settings_of_the_next_revision(tmp_path: Path, rules: RuleBook) -> None:
    settings = load_settings_file(write(tmp_path, "sync.toml", GOOD_TOML), T, rules, revision=4)
    assert (settings.schema_version, settings.tenant, settings.revision) == (2, T, 4)
    assert (settings.order_target, settings.rules_off) == ("contract", frozenset({"PRD-1", "SO-13"}))
    assert settings.field_mappings[0] == FieldMapping(
        system=System.CRM, entity="customer", source_field="custom_field5", target_field="address"
    )
    as_json = write(tmp_path, "sync.json", __import__("json").dumps(settings.document()))
    assert load_settings_file(as_json, T, rules) == settings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('rules_off = ["PRD-99"]', "PRD-99 is not a rule of the matrix"),
        ('rules_off = ["X-1"]', "X-1 cannot be switched off (echo prevention"),
        ('tenant = "cty-b"', "value names tenant 'cty-b' but the key is 'cty-a'"),
        ('order_target = "invoice"', "order_target"),
        ('rule_off = ["PRD-1"]', "unknown setting(s) rule_off"),
        ("rules_off = [PRD-1", "is neither JSON nor TOML"),
        ('{"rules_off": [}', "is not JSON"),
        ('["PRD-1"]', "holds no settings record (a JSON object or a TOML table)"),
        (
            '[[field_mappings]]\nsystem = "crm"\nentity = "customer"\nsource_field = "hobby"\ntarget_field = "address"',
            "crm customer has no field 'hobby' (it reports address, code, email, is_personal, name, phone, tax_code, "
            "or a custom field (custom_field*))",
        ),
        (
            '[[field_mappings]]\nsystem = "crm"\nentity = "customer"\nsource_field = "custom_field1"\n'
            'target_field = "website"',
            "acct customer takes no field 'website' (it takes address, code, email, is_personal, name, phone, "
            "tax_code)",
        ),
        (
            '[[field_mappings]]\nsystem = "crm"\nentity = "product"\nsource_field = "custom_field1"\n'
            'target_field = "unit_price"\ntype = "date"',
            "a date cannot become acct unit_price (a money; use type money or number)",
        ),
        (
            '[[field_mappings]]\nsystem = "crm"\nentity = "customer"\nsource_field = "custom_field1"\n'
            'target_field = "code"',
            "code names the record; a mapping cannot write it",
        ),
        (
            '[[field_mappings]]\nsystem = "crm"\nentity = "customer"\nsource_field = "custom_field1"\n'
            'target_field = "address"\n[[field_mappings]]\nsystem = "crm"\nentity = "customer"\n'
            'source_field = "custom_field2"\ntarget_field = "address"',
            "two sources for acct customer address",
        ),
        (
            '[[field_mappings]]\nsystem = "acct"\nentity = "sale_order"\nsource_field = "status"\n'
            'target_field = "status"\ntype = "choice"\nvalues = { "completed" = "maybe" }',
            "crm status has no value(s) 'maybe' (it has ",
        ),
        (
            '[[field_mappings]]\nsystem = "crm"\nentity = "customer"\nsource_field = "custom_field2"\n'
            'target_field = "is_personal"\ntype = "choice"\nvalues = { "A" = "True" }',
            "acct is_personal takes False or True, which no mapping type writes",
        ),
    ],
)
def test_a_bad_settings_file_is_refused_in_one_line(tmp_path: Path, rules: RuleBook, text: str, message: str) -> None:
    name = "sync.json" if text.startswith(("{", '["')) else "sync.toml"
    with pytest.raises(SettingsError) as refused:
        load_settings_file(write(tmp_path, name, text), T, rules)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_file_that_is_not_there_or_not_text_is_said(tmp_path: Path, rules: RuleBook) -> None:
    with pytest.raises(SettingsError, match=r"cannot read .*missing\.toml"):
        load_settings_file(tmp_path / "missing.toml", T, rules)
    binary = tmp_path / "sync.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SettingsError, match="is not text"):
        load_settings_file(binary, T, rules)


def test_a_field_only_the_sandbox_has_needs_extensions(tmp_path: Path, rules: RuleBook) -> None:
    text = (
        '[[field_mappings]]\nsystem = "crm"\nentity = "product"\nsource_field = "custom_field1"\n'
        'target_field = "category_code"'
    )
    path = write(tmp_path, "sync.toml", text)
    with pytest.raises(SettingsError, match=r"takes no field 'category_code' \(only the sandbox has it"):
        load_settings_file(path, T, rules)
    assert load_settings_file(path, T, rules, extensions=True).field_mappings[0].target_field == "category_code"
