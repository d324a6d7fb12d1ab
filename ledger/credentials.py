"""Members' station credentials: issuing, re-issuing, revoking, and the issuers' status lists.

A credential (the CWT/COSE credential of ``verifier.credential``, docs/credentials.md) is issued
when a member registers a holder key from the member app, and re-issued when what it says
changes: a transfer (home union), a group added or ended, a re-join, or when it nears expiry.
Each new credential revokes the member's previous one; leaving or erasure revokes without a
successor. The chain carries the facts, never the content:

- ``CredentialIssued`` ``{"member", "issuer", "index", "hash", "iat", "exp"}``: the member's
  pseudonym, the issuing union (whose issuer key signed), the credential's index in that
  issuer's status list, the base64url SHA-256 of the credential's bytes, and its validity.
- ``CredentialRevoked`` ``{"member", "issuer", "index", "hash", "reason"}``; ``reason`` is one
  of :data:`REASONS`.

Tables: ``credentials`` is a projection of those events (a rebuild reproduces it); it is what
the status lists are made from. ``credential_store`` lives beside the vault (server state, not
ledger fact): the credential's bytes and holder key, so that the member can fetch it again and
the server can re-issue to the same holder key, and the group disclosures' salts, sealed under
the member's ledger sealing key (``Vault.seal_for_ledger``, purpose ``credential-salts``): the
disclosures say which groups the member is in, hardship included, so they die with an erasure.

The issuer of a member's credential is the nearest union up the member's chain that holds an
issuer key valid now (a provincial federation, or the national one), so that a station needs
only a few dozen issuer keys in its trust list.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)

import keys
from ledger import unions
from ledger.domain import Actor, Conflict, Invalid, NotFound
from ledger.members import Change, Members, Status, get_member
from ledger.schema import metadata, projection_metadata
from ledger.sequencer import Tx
from verifier.credential import (
    GROUP_CODES,
    SALT_SIZE,
    IssuedCredential,
    issue_credential,
    short_kid_collisions,
)
from verifier.entry import Entry
from verifier.statuslist import (
    StatusList,
    VerifiedStatusList,
    sign_status_list,
    verify_status_list,
)

VALIDITY = timedelta(days=30)
RENEW_BEFORE = timedelta(days=7)  # the app asks for a new credential when less is left
STATUS_TTL = timedelta(hours=24)  # DESIGN.md: verifiers refresh status lists at least daily
STATUS_REFRESH = timedelta(hours=1)
MATERIAL_TTL = timedelta(
    seconds=2
)  # the server's own verifier reuses its lists this long  # a list served is never older than this
MIN_STATUS_BITS = 1024  # a new issuer's list still hides how few credentials it has issued
SALTS_PURPOSE = "credential-salts"
log = logging.getLogger("unionledger.credentials")
REASONS = ("superseded", "transferred", "groups-changed", "rejoined", "left", "erased", "renewed")

credentials = Table(
    "credentials",
    projection_metadata,
    Column("credential_hash", String(64), primary_key=True),  # hex SHA-256 of the token
    Column("member_id", String(32), nullable=False, index=True),
    Column("issuer", String(32), nullable=False),
    Column("status_index", Integer, nullable=False),
    Column("issued_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
    Column("reason", String(16), nullable=True),
)
Index("ux_credentials_issuer_index", credentials.c.issuer, credentials.c.status_index, unique=True)

credential_store = Table(
    "credential_store",
    metadata,
    Column("credential_hash", String(64), primary_key=True),
    Column("member_id", String(32), nullable=False, index=True),
    Column("token", LargeBinary, nullable=False),
    Column("holder_key", LargeBinary, nullable=False),  # raw 32-byte Ed25519 public key
    Column("sealed_salts", LargeBinary, nullable=False),
)


class NoCredential(NotFound):
    """The member has no valid credential."""

    code = "no-credential"


class NotIssuable(Conflict):
    """The member cannot hold a credential now (not an active member)."""

    code = "credential-not-issuable"


class NoIssuer(Conflict):
    """No union up the member's chain holds an issuer key valid now."""

    code = "no-issuer-key"


class BadHolderKey(Invalid):
    """The holder key is not an Ed25519 public key (an OKP JWK with crv Ed25519)."""

    code = "invalid-holder-key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def holder_key_from_jwk(jwk: object) -> keys.PublicKey:
    """The Ed25519 public key of an OKP JWK (RFC 8037).

    Raises:
        BadHolderKey: anything else (a private key ``d`` included: never accepted).
    """
    if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise BadHolderKey("the holder key must be an OKP JWK with crv Ed25519")
    if "d" in jwk:
        raise BadHolderKey("send the public key only")
    x = jwk.get("x")
    try:
        if not isinstance(x, str):
            raise ValueError("x")
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        if len(raw) != 32 or _b64(raw) != x:
            raise ValueError("x")
        return keys.PublicKey.from_bytes(raw)
    except (ValueError, keys.KeysError):
        raise BadHolderKey("the holder key's x is not a base64url 32-byte key") from None


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CredentialRow:
    credential_hash: str
    member_id: str
    issuer: str
    status_index: int
    issued_at: str
    expires_at: str
    revoked_at: str | None
    reason: str | None


def _row(r: Any) -> CredentialRow:
    return CredentialRow(
        r.credential_hash,
        r.member_id,
        r.issuer,
        r.status_index,
        r.issued_at,
        r.expires_at,
        r.revoked_at,
        r.reason,
    )


def current_credential(conn: Connection, member_id: str) -> CredentialRow | None:
    """The member's unrevoked credential (the newest), or None."""
    row = conn.execute(
        select(credentials)
        .where(credentials.c.member_id == member_id, credentials.c.revoked_at.is_(None))
        .order_by(credentials.c.issued_at.desc(), credentials.c.status_index.desc())
        .limit(1)
    ).first()
    return None if row is None else _row(row)


def credential_history(conn: Connection, member_id: str) -> list[CredentialRow]:
    rows = conn.execute(
        select(credentials)
        .where(credentials.c.member_id == member_id)
        .order_by(credentials.c.issued_at, credentials.c.status_index)
    )
    return [_row(r) for r in rows]


def issuers(conn: Connection) -> list[str]:
    """The unions that have issued a credential."""
    return list(conn.execute(select(credentials.c.issuer).distinct().order_by("issuer")).scalars())


def revoked_indexes(conn: Connection, issuer: str) -> tuple[int, list[int]]:
    """(the number of indexes allocated by ``issuer``, its revoked indexes)."""
    allocated = conn.execute(
        select(func.coalesce(func.max(credentials.c.status_index) + 1, 0)).where(
            credentials.c.issuer == issuer
        )
    ).scalar_one()
    revoked = conn.execute(
        select(credentials.c.status_index).where(
            credentials.c.issuer == issuer, credentials.c.revoked_at.is_not(None)
        )
    ).scalars()
    return int(allocated), list(revoked)


# -- the projection ------------------------------------------------------------------------------


class CredentialsProjection:
    """Keeps ``credentials`` from ``CredentialIssued`` / ``CredentialRevoked``."""

    name = "credentials"
    tables = (credentials,)

    def apply(self, conn: Connection, entry: Entry) -> None:
        body = entry.body
        if entry.type == "CredentialIssued":
            conn.execute(
                insert(credentials).values(
                    credential_hash=base64.urlsafe_b64decode(body["hash"] + "=").hex(),
                    member_id=body["member"],
                    issuer=body["issuer"],
                    status_index=body["index"],
                    issued_at=body["iat"],
                    expires_at=body["exp"],
                )
            )
        elif entry.type == "CredentialRevoked":
            conn.execute(
                update(credentials)
                .where(
                    credentials.c.credential_hash
                    == base64.urlsafe_b64decode(body["hash"] + "=").hex()
                )
                .values(revoked_at=entry.time, reason=body["reason"])
            )

    def flush(self, conn: Connection) -> None:
        pass

    def reset(self) -> None:
        pass


# -- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issued:
    """A credential as the member's app receives it."""

    row: CredentialRow
    token: bytes
    disclosures: dict[str, bytes]
    home_union: str


def _pack_salts(issued: IssuedCredential) -> bytes:
    """The salts of the disclosures, as (group code byte, 12-byte salt) pairs: enough to rebuild
    every disclosure (``cbor2.dumps([salt, code])``) without storing them in the clear."""
    out = bytearray()
    for group, disclosure in sorted(issued.disclosures.items()):
        out.append(GROUP_CODES[group])
        out += disclosure[2 : 2 + SALT_SIZE]  # 82 4C <salt> <code>
    return bytes(out)


def _unpack_salts(packed: bytes) -> dict[str, bytes]:
    import cbor2  # noqa: PLC0415

    names = {code: name for name, code in GROUP_CODES.items()}
    step = 1 + SALT_SIZE
    return {
        names[packed[i]]: cbor2.dumps([packed[i + 1 : i + step], packed[i]])
        for i in range(0, len(packed), step)
    }


class Credentials:
    """Credential commands. ``keyring`` signs; ``members`` knows groups and the vault."""

    def __init__(self, keyring: keys.Keyring, members: Members) -> None:
        self.keyring = keyring
        self.members = members
        self._lists: dict[str, tuple[tuple[int, int], datetime, str]] = {}
        self._lists_lock = threading.Lock()
        self._trust: tuple[datetime, str] | None = None
        self._verified: dict[str, keys.TrustList | VerifiedStatusList] = {}
        self._material: tuple[datetime, keys.TrustList, dict[str, VerifiedStatusList]] | None = None

    def use_keyring(self, keyring: keys.Keyring) -> None:
        """Sign with ``keyring`` from now on (the server reloaded its keyring file: a key was
        rotated, revoked or registered): the trust list and the status lists are signed anew
        with it at their next request."""
        with self._lists_lock:
            self.keyring = keyring
            self._lists.clear()
            self._trust = None
            self._verified = {}
            self._material = None

    # -- issuing ------------------------------------------------------------------------------

    def _issuer(
        self, conn: Connection, union_code: str, at: datetime
    ) -> tuple[str, keys.KeyRecord]:
        for code in reversed(unions.chain(conn, union_code)):
            try:
                return code, self.keyring.current(keys.Role.ISSUER, at, scope=code)
            except keys.NoCurrentKey:
                continue
        raise NoIssuer("no union above this member holds an issuer key valid now")

    def issue(
        self,
        tx: Tx,
        actor: Actor,
        member_id: str,
        holder: keys.PublicKey,
        *,
        reason: str = "superseded",
    ) -> Issued:
        """Issue a credential for ``member_id`` bound to ``holder``, revoking the member's
        current one (with ``reason``).

        Raises:
            NotIssuable: the member is not active.
            NoIssuer: no issuer key up the member's chain.
        """
        conn = tx.conn
        member = get_member(conn, member_id)
        if member is None or member.status != Status.ACTIVE:
            raise NotIssuable("only an active member holds a credential")
        previous = current_credential(conn, member_id)
        if previous is not None:
            self._revoke(tx, actor, previous, reason)
        now = tx.now
        issuer, record = self._issuer(conn, member.union_code, now)
        index = conn.execute(
            select(func.coalesce(func.max(credentials.c.status_index) + 1, 0)).where(
                credentials.c.issuer == issuer
            )
        ).scalar_one()
        groups = self.members.active_groups(conn, member_id, now.date())
        expires = now + VALIDITY
        issued = issue_credential(
            issuer_key=self.keyring.private_key(record.kid),
            issuer=record,
            member_id=member_id,
            home_union=member.union_code,
            holder_public_key=holder,
            groups=groups,
            status_index=int(index),
            issued_at=now,
            expires_at=expires,
        )
        digest = issued.credential_hash
        sealed = self.members.vault.seal_for_ledger(
            tx.execute, member_id, _pack_salts(issued), purpose=SALTS_PURPOSE
        )
        tx.execute(
            insert(credential_store).values(
                credential_hash=digest.hex(),
                member_id=member_id,
                token=issued.token,
                holder_key=holder.to_bytes(),
                sealed_salts=sealed,
            )
        )
        tx.append(
            "CredentialIssued",
            actor.ledger_actor,
            {
                "member": member_id,
                "issuer": issuer,
                "index": int(index),
                "hash": _b64(digest),
                "iat": _time(now),
                "exp": _time(expires),
            },
        )
        row = current_credential(conn, member_id)
        assert row is not None
        return Issued(row, issued.token, dict(issued.disclosures), member.union_code)

    def reissue(self, tx: Tx, actor: Actor, member_id: str, reason: str) -> Issued | None:
        """Replace the member's current credential with a fresh one for the same holder key
        (what a transfer, a group change or a renewal needs); None if they hold none."""
        previous = current_credential(tx.conn, member_id)
        if previous is None:
            return None
        holder = self.holder_key(tx.conn, previous)
        return self.issue(tx, actor, member_id, holder, reason=reason)

    def on_member_change(self, tx: Tx, actor: Actor, member_id: str, change: Change) -> None:
        """The :data:`ledger.members.ChangeHook`: a transfer or a group change re-issues the
        member's credential (same holder key, new content), leaving or erasure revokes it."""
        if change in (Change.LEFT, Change.ERASED):
            self.revoke(tx, actor, member_id, change.value)
            return
        member = get_member(tx.conn, member_id)
        if member is not None and member.status == Status.ACTIVE:
            self.reissue(tx, actor, member_id, change.value)

    def revoke(self, tx: Tx, actor: Actor, member_id: str, reason: str) -> CredentialRow | None:
        """Revoke the member's current credential (leaving, erasure); None if they hold none."""
        previous = current_credential(tx.conn, member_id)
        if previous is None:
            return None
        self._revoke(tx, actor, previous, reason)
        return previous

    def _revoke(self, tx: Tx, actor: Actor, row: CredentialRow, reason: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown revocation reason {reason!r}")
        tx.append(
            "CredentialRevoked",
            actor.ledger_actor,
            {
                "member": row.member_id,
                "issuer": row.issuer,
                "index": row.status_index,
                "hash": _b64(bytes.fromhex(row.credential_hash)),
                "reason": reason,
            },
        )
        if reason == "erased":
            tx.execute(
                delete(credential_store).where(credential_store.c.member_id == row.member_id)
            )

    # -- reading ------------------------------------------------------------------------------

    def fetch(self, conn: Connection, member_id: str) -> Issued:
        """The member's current credential with its disclosures.

        Raises:
            NoCredential: none, or it expired.
        """
        row = current_credential(conn, member_id)
        if row is None or row.expires_at <= _time(datetime.now(UTC)):
            raise NoCredential("no valid credential: register a holder key")
        stored = conn.execute(
            select(credential_store).where(
                credential_store.c.credential_hash == row.credential_hash
            )
        ).first()
        member = get_member(conn, member_id)
        if stored is None or member is None:
            raise NoCredential("no valid credential: register a holder key")
        salts = self.members.vault.open_from_ledger(
            conn, member_id, bytes(stored.sealed_salts), purpose=SALTS_PURPOSE
        )
        if salts is None:
            raise NoCredential("no valid credential: register a holder key")
        return Issued(row, bytes(stored.token), _unpack_salts(salts), member.union_code)

    def holder_key(self, conn: Connection, row: CredentialRow) -> keys.PublicKey:
        """The holder key a credential is bound to.

        Raises:
            NoCredential: the credential's stored copy is gone (erased).
        """
        raw = conn.execute(
            select(credential_store.c.holder_key).where(
                credential_store.c.credential_hash == row.credential_hash
            )
        ).scalar()
        if raw is None:
            raise NoCredential("no valid credential: register a holder key")
        return keys.PublicKey.from_bytes(bytes(raw))

    # -- what the server's own verifier needs -----------------------------------------------------

    def cached_material(
        self, now: datetime
    ) -> tuple[keys.TrustList, dict[str, VerifiedStatusList]] | None:
        """:meth:`verification_material` as last read, if still fresh at ``now``; else None."""
        with self._lists_lock:
            cached = self._material
        if cached is not None and timedelta(0) <= now - cached[0] < MATERIAL_TTL:
            return cached[1], cached[2]
        return None

    def verification_material(
        self,
        conn: Connection,
        uri_of: Callable[[str], str],
        now: datetime,
        *,
        fresh: bool = False,
    ) -> tuple[keys.TrustList, dict[str, VerifiedStatusList]]:
        """The trust list and every issuer's status list, verified as a station would verify
        them (against the root keys), so that the online redemption runs the very checks of
        ``verifier.credential.verify_presentation``. Verified once per signed token, and
        reused for :data:`MATERIAL_TTL` (the redemption command checks revocation against the
        credentials table itself, so a list a second old loses nothing)."""
        cached = None if fresh else self.cached_material(now)
        if cached is not None:
            return cached
        token = self.trust_list(now)
        with self._lists_lock:
            trusted = self._verified.get(token)
        if not isinstance(trusted, keys.TrustList):
            roots = [r.public_key for r in self.keyring.of_role(keys.Role.ROOT)]
            trusted = keys.verify_trust_list(token, roots, now)
            with self._lists_lock:
                self._verified = {token: trusted}  # drops the lists of an older trust list
        lists: dict[str, VerifiedStatusList] = {}
        for issuer in issuers(conn):
            status_token = self.status_list(conn, issuer, uri_of(issuer), now)
            with self._lists_lock:
                found = self._verified.get(status_token)
            if not isinstance(found, VerifiedStatusList):
                found = verify_status_list(status_token, trusted, now, issuer=issuer)
                with self._lists_lock:
                    self._verified[status_token] = found
            lists[issuer] = found
        with self._lists_lock:
            self._material = (now, trusted, lists)
        return trusted, lists

    # -- trust and status lists ------------------------------------------------------------------

    def trust_list(self, now: datetime) -> str:
        """The trust list (every published public key, signed by the root key), made anew at
        least every :data:`STATUS_REFRESH`: a station fetches it with the status lists."""
        with self._lists_lock:
            if self._trust is None or now - self._trust[0] >= STATUS_REFRESH:
                for short, kids in short_kid_collisions(self.keyring).items():
                    # Stations refuse these credentials (never guess): replace the newest key.
                    log.error("issuer keys share the short kid %s: %s", short.hex(), kids)
                self._trust = (now, keys.sign_trust_list(self.keyring, now))
            return self._trust[1]

    def status_list(self, conn: Connection, issuer: str, uri: str, now: datetime) -> str:
        """The issuer's signed Token Status List, made anew after each revocation (and at
        least every :data:`STATUS_REFRESH`).

        Raises:
            NotFound: the union never issued a credential.
            NoIssuer: it has no issuer key valid now to sign with.
        """
        allocated, revoked = revoked_indexes(conn, issuer)
        if allocated == 0:
            raise NotFound("this union has issued no credentials")
        version = (allocated, len(revoked))
        with self._lists_lock:
            cached = self._lists.get(issuer)
            if cached is not None and cached[0] == version and now - cached[1] < STATUS_REFRESH:
                return cached[2]
        size = max(MIN_STATUS_BITS, -(-allocated // 8) * 8)
        bits = StatusList(size)
        for index in revoked:
            bits.set(index)
        try:
            record = self.keyring.current(keys.Role.ISSUER, now, scope=issuer)
        except keys.NoCurrentKey:
            raise NoIssuer("the issuer has no key valid now") from None
        token = sign_status_list(
            bits,
            uri=uri,
            issuer_key=self.keyring.private_key(record.kid),
            kid=record.kid,
            now=now,
            ttl=STATUS_TTL,
        )
        with self._lists_lock:
            self._lists[issuer] = (version, now, token)
        return token
