"""The keyring's public facts on the chain: which keys exist, their windows, their revocations.

The keyring file (``keys.KeyStore``) holds the private keys; its records are sealed under the
passphrase, which stops an edit but not a rollback to an older, correctly sealed copy (from
before a revocation). So the server writes each fact of the file onto the chain the first time
it sees it, and from then on the chain, not the file, says which keys stand
(docs/keys.md section 4.6, docs/events.md section 15):

- ``KeyPublished`` ``{"kid", "role", "x", "scope", "not_before", "not_after"}``: a key the
  chain has not seen (``keys init``, ``keys rotate``, ``keys register``). ``scope`` and
  ``not_after`` may be ``null``.
- ``KeyRetired`` ``{"kid", "not_after"}``: a key's window now ends at ``not_after`` (a rotation
  closed it), earlier than the chain said.
- ``KeyRevoked`` ``{"kid", "revoked_at"}``: the key is revoked from ``revoked_at`` on, earlier
  than the chain said (or for the first time). The reason stays in the file: free text.

A window or a revocation only ever moves earlier, as ``keys.Keyring`` moves them. The keyring a
server uses is :func:`merge` of the file and the chain: each key's earliest end and earliest
revocation of the two, the file's private halves, and the chain's keys the file lacks as
public-only records (a rolled-back file lost them; their signatures still verify). A file
that disagrees with the chain about what cannot change (a key's role, scope or start) is
refused.

May import: keys, verifier, ledger's own modules, sqlalchemy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, String, Table, select, update

import keys
from ledger.domain import SYSTEM, DomainError
from ledger.schema import projection_metadata
from ledger.sequencer import Sequencer, Tx
from verifier.entry import Entry

TYPES = ("KeyPublished", "KeyRetired", "KeyRevoked")
log = logging.getLogger("unionledger.keys")

chain_keys = Table(
    "chain_keys",
    projection_metadata,
    Column("kid", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("scope", String(64)),
    Column("x", String(64), nullable=False),
    Column("not_before", String(32), nullable=False),  # RFC 3339, seconds, "Z"
    Column("not_after", String(32)),
    Column("revoked_at", String(32)),
)


class KeyringConflict(DomainError):
    """The keyring file says something about a key that the chain contradicts and that can
    never change (its role, scope or start): the file is not this ledger's, or was forged."""

    code = "keyring-conflict"


def _earlier(a: str | None, b: str | None) -> str | None:
    """The earlier of two optional RFC 3339 times (``None``: no end)."""
    if a is None or b is None:
        return a if b is None else b
    return a if keys.parse_rfc3339(a) <= keys.parse_rfc3339(b) else b


def _time(value: datetime | None) -> str | None:
    return None if value is None else keys.format_rfc3339(value)


def chain_records(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every key the chain knows, by kid, as the ``chain_keys`` rows hold it."""
    return {row.kid: dict(row._mapping) for row in conn.execute(select(chain_keys))}


def _check_same(record: keys.KeyRecord, row: Mapping[str, Any]) -> None:
    fixed = (record.role.value, record.scope, _time(record.not_before))
    if fixed != (row["role"], row["scope"], row["not_before"]):
        mine = f"{fixed[0]} key of scope {fixed[1] or '-'} from {fixed[2]}"
        chain = f"{row['role']} key of scope {row['scope'] or '-'} from {row['not_before']}"
        raise KeyringConflict(
            f"the keyring file says key {record.kid} is a {mine}; the chain says a {chain}"
        )


def record_keyring(tx: Tx, ring: keys.Keyring) -> list[Entry]:
    """Append what the chain does not yet say of ``ring`` (a command for the sequencer);
    the entries appended (none when the chain is up to date).

    Raises:
        KeyringConflict: the file contradicts the chain (nothing is appended then).
    """
    known = chain_records(tx.conn)
    events: list[tuple[str, dict[str, Any]]] = []
    later: list[tuple[str, dict[str, Any]]] = []  # after every KeyPublished: retired, revoked
    for record in sorted(ring, key=lambda r: (r.not_before, r.kid)):
        not_after, revoked_at = _time(record.not_after), _time(record.revoked_at)
        row = known.get(record.kid)
        if row is None:
            events.append(
                (
                    "KeyPublished",
                    {
                        "kid": record.kid,
                        "role": record.role.value,
                        "x": keys.b64url_encode(record.public_key.to_bytes()),
                        "scope": record.scope,
                        "not_before": _time(record.not_before),
                        "not_after": not_after,
                    },
                )
            )
            row = {"not_after": not_after, "revoked_at": None}
        else:
            _check_same(record, row)
        if not_after is not None and _earlier(not_after, row["not_after"]) != row["not_after"]:
            later.append(("KeyRetired", {"kid": record.kid, "not_after": not_after}))
        if revoked_at is not None and _earlier(revoked_at, row["revoked_at"]) != row["revoked_at"]:
            later.append(("KeyRevoked", {"kid": record.kid, "revoked_at": revoked_at}))
    events += later
    return [tx.append(type_, SYSTEM.ledger_actor, body) for type_, body in events]


def merge(ring: keys.Keyring, chain: Mapping[str, Mapping[str, Any]]) -> keys.Keyring:
    """The keyring to use: ``ring`` (the file) with what the chain says (see the module).

    Raises:
        KeyringConflict: the file contradicts the chain.
    """
    records: list[keys.KeyRecord] = []
    private: dict[keys.KeyId, keys.PrivateKey] = {}
    for kid, row in chain.items():
        mine = ring.record(kid) if kid in ring else None
        if mine is not None:
            _check_same(mine, row)
            if ring.has_private(kid):
                private[mine.kid] = ring.private_key(kid)
        not_after = _earlier(row["not_after"], _time(mine.not_after) if mine else None)
        revoked_at = _earlier(row["revoked_at"], _time(mine.revoked_at) if mine else None)
        reason = mine.revocation_reason if mine is not None and revoked_at is not None else None
        record = keys.KeyRecord.from_dict(
            {
                "kid": kid,
                "role": row["role"],
                "jwk": {"kty": "OKP", "crv": "Ed25519", "x": row["x"]},
                "not_before": row["not_before"],
                "not_after": not_after,
                "scope": row["scope"],
                "revoked_at": revoked_at,
                "revocation_reason": reason,
            }
        )
        records.append(record)
    for record in ring:
        if record.kid not in chain:  # not recorded yet (a reader that does not append)
            records.append(record)
            if ring.has_private(record.kid):
                private[record.kid] = ring.private_key(record.kid)
    secrets = {name: ring.secret(name) for name in ring.secret_names()}
    return keys.Keyring(records, private, secrets)


def _apply_published(conn: Connection, body: Mapping[str, Any]) -> None:
    kid = body["kid"]
    if conn.execute(select(chain_keys.c.kid).where(chain_keys.c.kid == kid)).first():
        return  # the command never appends it twice; a replay must not fail on it either
    conn.execute(
        chain_keys.insert().values(
            kid=kid,
            role=body["role"],
            scope=body.get("scope"),
            x=body["x"],
            not_before=body["not_before"],
            not_after=body.get("not_after"),
            revoked_at=None,
        )
    )


def _apply_earlier(conn: Connection, body: Mapping[str, Any], column: str) -> None:
    row = conn.execute(select(chain_keys).where(chain_keys.c.kid == body["kid"])).first()
    if row is None:
        return
    value = _earlier(body[column], row._mapping[column])
    if value != row._mapping[column]:
        conn.execute(
            update(chain_keys).where(chain_keys.c.kid == body["kid"]).values({column: value})
        )


class KeysProjection:
    """The ``chain_keys`` table: the chain's view of the keyring's public facts. Writes in
    :meth:`apply` (rare events; the next command reads them)."""

    name = "chain_keys"
    tables: Sequence[Table] = (chain_keys,)

    def apply(self, conn: Connection, entry: Entry) -> None:
        if entry.type == "KeyPublished":
            _apply_published(conn, entry.body)
        elif entry.type == "KeyRetired":
            _apply_earlier(conn, entry.body, "not_after")
        elif entry.type == "KeyRevoked":
            _apply_earlier(conn, entry.body, "revoked_at")

    def flush(self, conn: Connection) -> None:
        pass

    def reset(self) -> None:
        pass


def keyring_on_chain(sequencer: Sequencer, ring: keys.Keyring) -> keys.Keyring:
    """Record ``ring``'s news on the chain (one command, committed) and return the keyring to
    use: :func:`merge` of the file and the chain.

    Raises:
        KeyringConflict: the file contradicts the chain (nothing is appended then).
    """

    def command(tx: Tx) -> dict[str, dict[str, Any]]:
        record_keyring(tx, ring)
        return chain_records(tx.conn)

    merged = merge(ring, sequencer.execute(command))
    now = keys.utc_now()
    lost = [
        r
        for r in merged
        if r.kid not in ring
        and r.role is not keys.Role.STATION
        and r.status_at(now) in ("active", "pending")
    ]
    for record in lost:
        log.warning(
            "key %s (%s) is on the ledger but not in the keyring file, which is older than the"
            " ledger: nothing can sign with it; restore the newest keyring file"
            " (docs/keys.md section 4.6)",
            record.kid,
            record.role.value,
        )
    return merged
