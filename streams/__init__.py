"""lienthong: the stream processor that keeps AMIS CRM and AMIS Kế toán in sync.

Importing this package opens no connection and reads no setting: see ``streams.app.create_app``.
"""
