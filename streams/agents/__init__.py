"""Faust agents: thin loops that read an event, look up tables, call the core, update tables, send."""
