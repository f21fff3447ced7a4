"""The operator's command line: tests run ``cli.main.main`` as a user would, against the real broker
(the integration tier's fixtures: a fresh topic prefix per module, a tenant per test) and the sandboxes."""

from __future__ import annotations

from tests.integration.conftest import bootstrap, kafka, module_settings, tenant, worker

__all__ = ["bootstrap", "kafka", "module_settings", "tenant", "worker"]
