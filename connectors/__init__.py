"""Connector services: consume ``commands.<system>`` and apply them to each system's HTTP API."""
