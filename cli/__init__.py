"""The ``lienthong`` command line: every service and operator tool behind one command."""
