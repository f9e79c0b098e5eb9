"""The fleet: every node's journal copied to a shared PostgreSQL ledger, read and verified
fleet-wide.

Each node keeps working on its own (its SQLite journal and casts); the ledger is never on
a login's or a session's path. The package's modules, each with one job:

- ``schema``: the ledger's DDL, its expand-only migrations and the version check;
- ``ledger``: ``Ledger``, every call to the ledger bounded in time, with a breaker.

Imported only when a ``fleet:`` section is configured (psycopg is loaded here, never by
a node without one).
"""
