"""The operator's tools: topics, lag, dead letters, reconcile, backfill, a record's audit trail,
tenant settings, the local broker and the operator's page (``ops.dashboard``)."""
