"""The AMIS systems as lienthong talks to them: clients of the AMIS CRM Open API v2 and the ACT Open
API, their field mappings, and the ledger of the integration's own writes. Used by the connectors,
the capture services and the operator's tools alike."""
