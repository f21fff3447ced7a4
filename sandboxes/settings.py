"""The settings of a sandbox (``lienthong sandbox crm|acct``): ``SandboxSettings``.

Also the definition of ``LIENTHONG_SANDBOX_ADMIN_TOKEN``, which the demo reads alike for its sandboxes.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from common.settings import (
    AcctAppIdSetting,
    AcctCredentialsSetting,
    CrmCredentialsSetting,
    DataDirSetting,
    ServiceSettings,
    WebHostSetting,
)
from sandboxes.acct_answers import AcctAnswers


def _admin_token_is_long_enough(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < 16:
        raise ValueError(
            "LIENTHONG_SANDBOX_ADMIN_TOKEN must be at least 16 characters (e.g. python -c "
            "'import secrets; print(secrets.token_urlsafe(24))'), or unset for a random one"
        )
    return value


#: LIENTHONG_SANDBOX_ADMIN_TOKEN
SandboxAdminTokenSetting = Annotated[
    SecretStr | None,
    Field(
        None,
        description="The token a sandbox's /sandbox/... routes (test controls, an accountant's screens) need, as "
        "'Authorization: Bearer <token>'; unset: a random one made at start and printed once. SECURITY.md.",
    ),
    AfterValidator(_admin_token_is_long_enough),
]


class CrmAnswers(BaseModel):
    """How the CRM sandbox answers where the reference leaves the real CRM's answer open (amis-apis.md §1.4,
    §1.5, Part 5): each choice is one the reference allows, the defaults are what the sandbox always did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_page: Literal[0, 1] = Field(
        1, description="The number of a listing's first page: 0 (page 1 is the second) or 1 (§1.4: both are used)."
    )
    page_zero: Literal["page_one", "empty", "refused"] = Field(
        "page_one",
        description="With first_page 1, what page 0 answers: page 1's rows (the clients' observation that page 0 "
        "'returned data'), no rows, or HTTP 400 InvalidParam.",
    )
    post_status: Literal[200, 201] = Field(
        200, description="The HTTP status of a POST that creates (§1.5: 200 or 201)."
    )
    deleted_rows: Literal["dropped", "listed"] = Field(
        "dropped",
        description="A deleted record leaves the lists and lookups, or stays in them with is_deleted true and its "
        "deletion as modified_date (§1.4: unknown).",
    )


class SandboxSettings(ServiceSettings):
    """A sandbox."""

    data_dir: DataDirSetting
    web_host: WebHostSetting
    sandbox_credentials: SecretStr = Field(
        SecretStr("{}"),
        description="A sandbox's accepted credentials, JSON: CRM {client_id: tenant, "
        "'<client_id>:secret': secret}; accounting {'<app_id>:<access_code>': tenant}. Secret as a whole (access "
        "codes are keys): read it with sandbox_logins.",
    )
    sandbox_admin_token: SandboxAdminTokenSetting
    sandbox_faults: dict[str, float | int | None] = Field(
        default_factory=dict,
        description="Fault injection of a sandbox (sandboxes.faults.FaultConfig fields).",
    )
    # the connectors' layout of the tenants, which a sandbox accepts when LIENTHONG_SANDBOX_CREDENTIALS is unset
    crm_credentials: CrmCredentialsSetting
    acct_app_id: AcctAppIdSetting
    acct_credentials: AcctCredentialsSetting
    sandbox_crm_answers: CrmAnswers = Field(
        default_factory=CrmAnswers,
        description="CRM sandbox only: its answers where the reference allows several, JSON, e.g. "
        '{"first_page": 0, "post_status": 201, "deleted_rows": "listed"} (sandboxes.settings.CrmAnswers: '
        "first_page 0|1, page_zero page_one|empty|refused, post_status 200|201, deleted_rows dropped|listed). "
        "Unset: page 0 and 1 are both the first page, POST answers 200, deleted rows leave the lists.",
    )
    acct_callback_url: str | None = Field(
        None,
        description="Accounting sandbox only: the capture service's /callback on its public port "
        "(LIENTHONG_CALLBACK_PORT); it posts a tenant's callbacks to <this>/<callback_secret of the tenant in "
        "LIENTHONG_ACCT_CREDENTIALS>, as MISA does to the URL registered for the company (to <this> itself for "
        "a tenant without one). A real tenant's callback URL is registered with MISA.",
    )
    sandbox_acct_answers: AcctAnswers = Field(
        default_factory=AcctAnswers,
        description="Accounting sandbox only: which of the answers the ACT reference leaves open it gives, JSON "
        '(sandboxes.acct_answers.AcctAnswers), e.g. {"save_dictionary": "null", "order_link": "reference"}; '
        "unset: the answers it always gave.",
    )

    @field_validator("sandbox_credentials")
    @classmethod
    def _sandbox_credentials_are_json_strings(cls, value: SecretStr) -> SecretStr:
        _logins(value)
        return value

    @property
    def sandbox_logins(self) -> dict[str, str]:
        """``LIENTHONG_SANDBOX_CREDENTIALS`` parsed: what a sandbox accepts, in its own layout (empty: unset)."""
        return _logins(self.sandbox_credentials)


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
