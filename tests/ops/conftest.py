"""The operator's tools at the ``ops`` level: pure tests, and tests against the real broker with the
integration tier's fixtures (a fresh topic prefix per module, a worker)."""

from __future__ import annotations

from tests.integration.conftest import bootstrap, kafka, module_settings, tenant, worker

__all__ = ["bootstrap", "kafka", "module_settings", "tenant", "worker"]
