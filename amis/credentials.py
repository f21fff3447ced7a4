"""The tenants' access to the two systems' APIs, read from the settings, and whether a client can use it.

The API clients a connector (and a capture service) talks to are in their own modules:

* ``CrmClient`` (``amis/crm_client.py``): AMIS CRM Open API v2 — JWT from ``/Account``,
  ``Authorization: Bearer`` + ``Clientid``, paged lists, array writes with per-item results.
* ``ActClient`` (``amis/acct_client.py``): AMIS Kế toán ACT Open API — ``connect`` with
  ``app_id`` / ``access_code`` / ``org_company_code``, ``X-MISA-AccessToken``, dictionaries,
  asynchronous ``save`` / ``delete`` answered by signed callbacks.

Errors are classified for the retry policy (``amis/errors.py``): ``Transient`` (retry) or
``Refused`` (do not), each with the status and the system's message.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from amis.acct_client import ActClient, ActCredentials
from amis.crm_client import CrmClient, CrmCredentials
from amis.errors import Refused, Transient
from amis.settings import AmisSettings
from common.names import System


def crm_credentials(amis: AmisSettings) -> dict[str, CrmCredentials]:
    """``LIENTHONG_CRM_CREDENTIALS``, else the CRM entries of the older ``LIENTHONG_CONNECTOR_CREDENTIALS``."""
    found = {t: CrmCredentials(c.client_id, c.client_secret) for t, c in amis.crm_credentials.items()}
    for tenant, values in amis.connector_credentials.items():
        if tenant not in found and values.client_id:
            found[tenant] = CrmCredentials(values.client_id, values.client_secret or SecretStr(""))
    return found


def acct_credentials(amis: AmisSettings) -> dict[str, ActCredentials]:
    """``LIENTHONG_ACCT_CREDENTIALS``, else the accounting entries of ``LIENTHONG_CONNECTOR_CREDENTIALS``
    (``connection_code`` is the access code; the tenant stands for its company code)."""
    found = {t: ActCredentials(c.access_code, c.org_company_code) for t, c in amis.acct_credentials.items()}
    for tenant, values in amis.connector_credentials.items():
        if tenant not in found and values.connection_code is not None and values.connection_code.get_secret_value():
            found[tenant] = ActCredentials(values.connection_code, values.org_company_code or tenant)
    return found


def acct_app_id(amis: AmisSettings) -> str:
    """The app id (``LIENTHONG_ACCT_APP_ID``, else the older layout's), in clear for the ACT client."""
    if amis.acct_app_id.get_secret_value():
        return amis.acct_app_id.get_secret_value()
    return next((v.app_id.get_secret_value() for v in amis.connector_credentials.values() if v.app_id is not None), "")


async def token_problems(client: CrmClient | ActClient) -> list[str]:
    """``<tenant>: <why>`` for each tenant of the client's credentials no token can be had for now
    (none: every tenant has one). What a service's ``/readyz`` says of the system's API."""
    problems = []
    for tenant in client.credentials:
        try:
            await client.token(tenant)
        except (Transient, Refused) as exc:
            problems.append(f"{tenant}: {exc}")
    return problems


def shared_ledger_path(data_dir: Path, ledger_dir: Path | None, system: System) -> Path:
    """The ledger of recent writes (and, for accounting, awaited callbacks) a connector shares with capture:
    in ``LIENTHONG_LEDGER_DIR``, else in ``<LIENTHONG_DATA_DIR>/connectors``."""
    return (ledger_dir or data_dir / "connectors") / f"{system}-shared.sqlite"
