"""The processor's state: every table of every tenant, partitioned like the changes topic.

``store`` holds one partition's tables (RocksDB, or memory in tests) and how they map onto the state
changelog; ``state`` is the core's ``State`` over a store through one batch; ``memory`` the memory
budget every store of a worker shares; ``tenants`` the tenant settings every worker reads whole.
``docs/state.md`` says what each table holds, who writes it and who reads it.
"""
