"""The access token an AMIS API gave for a tenant, as both clients hold it until it is renewed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Token:
    value: str
    expires_at: float  # epoch seconds
