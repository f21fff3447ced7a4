"""What both sandboxes write alike: dates as AMIS writes them, and the header that marks an extension."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

# Both AMIS systems keep and show times in Vietnam's time (UTC+7).
VN = timezone(timedelta(hours=7))

# On an answer the real API would not give: why the sandbox gives it (a resource, field or kind the
# sync matrix needs that the public API lacks).
EXTENSION_HEADER = "X-Sandbox-Extension"


def iso_vn(ms: int) -> str:
    """``2025-07-16T10:00:00.123+07:00``: how both systems write dates."""
    return datetime.fromtimestamp(ms / 1000, tz=VN).isoformat(timespec="milliseconds")
