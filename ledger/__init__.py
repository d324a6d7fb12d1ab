"""ledger: the system of record.

What it is: events, the hash chain, the Merkle tree, checkpoints, proofs and their storage
(SQLAlchemy on SQLite or PostgreSQL), and the domain state (unions, members, credentials,
programs, stations, redemptions) as projections of the events.

What it may import: the standard library, SQLAlchemy and the database drivers, ``keys`` and
``verifier``. Never ``api`` or a web framework (keys <- verifier <- ledger <- api).
"""
