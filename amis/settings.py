"""What a client of the AMIS APIs is configured with: ``AmisSettings``, the block the connectors, the
capture services and the operator's commands hold (``amis.credentials`` reads the tenants from it).

Also the definitions of the variables the connectors and the capture services read alike (the shared
ledger's directory, when a token is renewed), so each has one type and default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr

from common.settings import AcctAppIdSetting, AcctCredentialsSetting, CrmCredentialsSetting, EnvSettings


class ConnectorTenant(BaseModel):
    """One tenant of the older ``LIENTHONG_CONNECTOR_CREDENTIALS``: CRM's AppID and secret, or ACT's app id and
    connection (access) code. The secrets are SecretStr; keys not listed here are ignored."""

    client_id: str | None = None
    client_secret: SecretStr | None = None
    app_id: SecretStr | None = None  # the key ACT signs callbacks with: a secret
    connection_code: SecretStr | None = None
    org_company_code: str | None = None


class AmisSettings(EnvSettings):
    """The AMIS APIs.

    Where the two systems' APIs are and every tenant's access to them (JSON in the environment for the
    dict settings).
    """

    crm_url: str = Field("http://127.0.0.1:8081", description="Base URL of the CRM API (or its sandbox).")
    acct_url: str = Field("http://127.0.0.1:8082", description="Base URL of the accounting API (or its sandbox).")
    crm_credentials: CrmCredentialsSetting
    acct_app_id: AcctAppIdSetting
    acct_credentials: AcctCredentialsSetting
    connector_credentials: dict[str, ConnectorTenant] = Field(
        default_factory=dict,
        description='tenant -> {"client_id", "client_secret"} (CRM) or '
        '{"app_id", "connection_code"} (accounting), e.g. LIENTHONG_CONNECTOR_CREDENTIALS=\'{"cty-abc": {...}}\'; '
        "the secret and the code are never logged.",
    )


#: LIENTHONG_LEDGER_DIR
#: LIENTHONG_CONNECTOR_EXTENSIONS: the connectors write the sandboxes' extensions; whatif checks field mappings so.
ConnectorExtensionsSetting = Annotated[
    bool,
    Field(
        False,
        description="Also write the sandboxes' extensions (CRM quotes, invoice requests, price policies, categories "
        "and fields such as delivered_quantities; ACT contracts, quotes, invoices, price policies, item groups and "
        "fields such as inventory_item_category_code). Off against real tenants, which have none: those "
        "commands are refused and those fields left out.",
    ),
]
LedgerDirSetting = Annotated[
    Path | None,
    Field(
        None,
        description="Where the connectors keep the ledger of their recent writes and awaited callbacks, shared "
        "with the capture services (same host or shared volume); with LIENTHONG_LEDGER_TOKEN, where the capture "
        "service keeps it, with the connectors' command ids, and serves it to them. Default: <data_dir>/connectors.",
    ),
]

#: LIENTHONG_LEDGER_TOKEN: the capture service serves its ledger API with it; a connector sends it
LedgerTokenSetting = Annotated[
    SecretStr | None,
    Field(
        None,
        description="Shared secret of a system's ledger API (the capture service serves the ledger to connector "
        "replicas, LIENTHONG_LEDGER_URL): capture serves the API only when it is set, and a connector given "
        "LIENTHONG_LEDGER_URL sends it; the same random value on both (e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`). Never logged.",
    ),
]

#: LIENTHONG_TOKEN_RENEW_BEFORE
TokenRenewBeforeSetting = Annotated[
    float, Field(600.0, ge=0, description="A CRM or ACT token is fetched again this many seconds before it ends.")
]
