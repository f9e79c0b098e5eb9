"""Alerts: sinks (webhook, syslog, command) fed from the store's persistent outbox.

``payload`` builds the one JSON document every sink receives; ``sinks`` sends it;
``delivery`` retries from the outbox; ``raiser`` turns audit events into outbox rows
(through proxy.core.anomaly); ``direct`` is the path for when the store itself is down;
``overrides`` is the running proxy's side of ``breakglass kill``/``extend``.
"""
