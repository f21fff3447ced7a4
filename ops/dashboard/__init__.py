"""The operator's page: lag, throughput, latency, dead letters and sync health per tenant and entity.

``create_dashboard(kafka, scrape_urls)`` (``ops.dashboard.web``) is an aiohttp application;
``lienthong dashboard`` serves it, and so does ``lienthong demo``. It reads the broker, the audit,
result and dead-letter topics and the services' ``/metrics``; it never imports the faust agents.
"""
