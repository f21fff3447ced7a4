"""How a call to a system ended badly, classified for the retry policy.

``Transient``: worth retrying (connection errors, timeouts, 408, 429, 5xx, ACT's ``Exception``).
``Refused``: not worth retrying; ``status`` is the HTTP status, or for a business error answered
with HTTP 200 (ACT's ``ErrorCode``, CRM's per-item ``validate_infos``) the status that means the
same (``REFUSAL_STATUS``), so that results keep the contract's ``http_<status>`` kinds; the
system's own code and words are in the message.
"""

from __future__ import annotations

# ACT's documented error codes (amis-apis.md §2.3) -> the HTTP status that says the same.
REFUSAL_STATUS: dict[str, int] = {
    "InvalidParam": 400,
    "IsCreatedVoucher": 409,  # the proposal became a real voucher: it can no longer change
    "VoucherNotFound": 404,
    "InvalidAppID": 401,
    "InvalidToken": 401,
    "ExpiredToken": 401,
    "InvalidAccessToken": 401,
    "AppIDDisconnect": 403,
    "DBAmisNotConnectDBACT": 403,
}


class Transient(Exception):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Refused(Exception):
    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # the system's error code, when it gave one

    @property
    def kind(self) -> str:
        return f"http_{self.status}"


class ProtocolError(Transient):
    """An answer without the documented shape (a proxy's error page, a changed API): retried like a
    passing fault, and reported with this message when retries run out."""
