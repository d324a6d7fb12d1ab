"""Who may log in, and the state of logging in: accounts, sessions, one-time codes, challenges.

Officials and auditors log in with an account (username, Argon2id password hash, optional TOTP);
members with a one-time code sent to their phone; station devices by signing a challenge. Every
login opens a *session* holding a refresh token. These tables are server state, not ledger
facts: they live in ``ledger.schema.metadata`` (not projections) and hold no personal data but
the username. All times are integer seconds since the epoch (UTC).

- ``accounts``: ``account_id`` (random pseudonym: token subject and ledger actor key id),
  ``username`` (unique, lower case), ``role`` (official|auditor), ``scope`` (union code of an
  official), ``password_hash`` (libsodium's Argon2id string: the cost travels with the hash),
  ``totp_secret``/``totp_pending`` (sealed, see :func:`seal_totp`), ``totp_last_step`` (the last
  TOTP time step accepted: a code is never accepted twice), ``failed_count``, ``locked_until``,
  ``created_at``, ``disabled``.
- ``auth_sessions``: one per login; ``refresh_hash`` is SHA-256 of the current refresh token.
  ``auth_refresh_retired`` remembers rotated-out refresh tokens so that their reuse is caught.
- ``auth_otps``: members' one-time codes, keyed HMAC of the code, expiry, attempts used.
- ``auth_challenges``: station login challenges; deleting the row is using it.
- ``login_failures``: failed logins per username and client address (both hashed), and the
  lock of that pair.

Compare-and-set updates (``UPDATE ... WHERE <expected state>``) make every step safe under
concurrent requests without holding locks across the password hash or a network call.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nacl.bindings
import nacl.exceptions
from nacl.pwhash import argon2id
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from ledger.db import driver_execute
from ledger.domain import Actor, Conflict, Forbidden, Invalid, NotFound, Role
from ledger.errors import LedgerError
from ledger.schema import metadata

if TYPE_CHECKING:
    from ledger.sequencer import Tx

ACCOUNT_ROLES = frozenset({Role.OFFICIAL, Role.AUDITOR})
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
_USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{2,63}\Z")
_SCOPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
_SEAL_FORMAT = "unionledger-accounts/1"
_NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("scope", String(64)),
    Column("password_hash", String(256), nullable=False),
    Column("totp_secret", Text),
    Column("totp_pending", Text),
    Column("totp_last_step", BigInteger),
    Column("failed_count", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("session_id", String(43), primary_key=True),
    Column("subject", String(128), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("scope", String(128)),
    Column("refresh_hash", LargeBinary(32), nullable=False, unique=True),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("revoked_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
)

auth_refresh_retired = Table(
    "auth_refresh_retired",
    metadata,
    Column("refresh_hash", LargeBinary(32), primary_key=True),
    Column("session_id", String(43), nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
)

auth_otps = Table(
    "auth_otps",
    metadata,
    Column("otp_id", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False, index=True),
    Column("code_hash", LargeBinary(32), nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
)

# Failed logins per username and client address (docs/auth.md section 4.1): the lock that a
# stranger cannot impose on the account's owner from elsewhere. Keyed by a hash, so the table
# holds neither usernames nor addresses; usernames without an account count here too, so the
# lock does not reveal which exist.
login_failures = Table(
    "login_failures",
    metadata,
    Column("pair", LargeBinary(32), primary_key=True),  # SHA-256(username "\n" client)
    Column("who", LargeBinary(32), nullable=False, index=True),  # SHA-256(username)
    Column("failed_count", Integer, nullable=False),
    Column("locked_until", BigInteger),
    Column("updated", BigInteger, nullable=False, index=True),
)

auth_challenges = Table(
    "auth_challenges",
    metadata,
    Column("challenge", String(64), primary_key=True),
    Column("station_id", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_auth_challenges_expires_at", "expires_at"),
)


class SealedValueDamaged(LedgerError):
    """A sealed value in the accounts table does not open (altered row or wrong secret)."""

    code = "ledger-error"


# -- passwords ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordCost:
    """Argon2id cost of new password hashes (a hash keeps the cost it was made with).

    The default is libsodium's "interactive" level (64 MiB, 2 passes: some tens of ms here).
    """

    opslimit: int = argon2id.OPSLIMIT_INTERACTIVE
    memlimit: int = argon2id.MEMLIMIT_INTERACTIVE

    @classmethod
    def fastest(cls) -> PasswordCost:
        """The cheapest cost libsodium allows. For tests only: it protects nothing."""
        return cls(opslimit=argon2id.OPSLIMIT_MIN, memlimit=argon2id.MEMLIMIT_MIN)


def _password_bytes(password: str) -> bytes:
    # NFKC: the same password typed with full-width or half-width characters is the same.
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def hash_password(password: str, cost: PasswordCost | None = None) -> str:
    """The Argon2id string of ``password`` (no length check: see :func:`check_new_password`)."""
    cost = cost or PasswordCost()
    raw = argon2id.str(_password_bytes(password), opslimit=cost.opslimit, memlimit=cost.memlimit)
    return bytes(raw).decode("ascii")


def password_matches(stored_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (constant-time inside libsodium)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return bool(argon2id.verify(stored_hash.encode("ascii"), _password_bytes(password)))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, UnicodeEncodeError):
        return False


def check_new_password(password: str) -> None:
    """Raises:
    Invalid: shorter than 12 or longer than 1,024 characters."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise Invalid(f"a password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")


def normalise_username(username: str) -> str | None:
    """The stored form of ``username`` (lower case), or ``None`` when it cannot be one."""
    value = username.strip().lower()
    return value if _USERNAME_RE.match(value) else None


# -- sealing (TOTP secrets) and keyed hashes (one-time codes) ----------------------------------


def subkey(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose``, derived from the keyring secret ``accounts``."""
    return hmac.new(secret, f"{_SEAL_FORMAT} {purpose}".encode(), hashlib.sha256).digest()


def _totp_aad(account_id: str, pending: bool) -> bytes:
    # Binds a sealed value to its account and column: copying it to another row fails to open.
    return f"{_SEAL_FORMAT} {'totp-pending' if pending else 'totp'} {account_id}".encode()


def seal_totp(secret: bytes, account_id: str, totp_secret: str, *, pending: bool) -> str:
    """``totp_secret`` sealed with XChaCha20-Poly1305 (hex nonce ‖ ciphertext)."""
    nonce = secrets.token_bytes(_NONCE_SIZE)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        totp_secret.encode("ascii"), _totp_aad(account_id, pending), nonce, subkey(secret, "totp")
    )
    return (nonce + sealed).hex()


def open_totp(secret: bytes, account_id: str, sealed: str, *, pending: bool) -> str:
    """Inverse of :func:`seal_totp`.

    Raises:
        SealedValueDamaged: it does not open.
    """
    try:
        blob = bytes.fromhex(sealed)
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[_NONCE_SIZE:],
            _totp_aad(account_id, pending),
            blob[:_NONCE_SIZE],
            subkey(secret, "totp"),
        )
        return bytes(plain).decode("ascii")
    except (ValueError, nacl.exceptions.CryptoError) as e:
        raise SealedValueDamaged(f"the TOTP secret of account {account_id} does not open") from e


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


# -- accounts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    username: str
    role: Role
    scope: str | None
    password_hash: str
    totp_secret: str | None
    totp_pending: str | None
    totp_last_step: int | None
    failed_count: int
    locked_until: int | None
    created_at: int
    disabled: bool

    def __repr__(self) -> str:  # never the hash or the sealed secrets
        return f"Account({self.account_id}, {self.role.value}, scope={self.scope})"

    @property
    def totp_enabled(self) -> bool:
        return self.totp_secret is not None

    def locked_at(self, now: int) -> bool:
        return self.locked_until is not None and now < self.locked_until


def _account(row: Any) -> Account:
    m = row._mapping
    return Account(**{**m, "role": Role(m["role"]), "disabled": bool(m["disabled"])})


def create_account(
    conn: Connection,
    *,
    username: str,
    password: str,
    role: Role | str,
    scope: str | None = None,
    now: int,
    cost: PasswordCost | None = None,
) -> Account:
    """Create an official's or auditor's account.

    Raises:
        Invalid: bad username, password, role or scope (officials need a union code; auditors
            see everything and take none).
        Conflict: the username is taken.
    """
    name = normalise_username(username)
    if name is None:
        raise Invalid("a username is 3-64 characters: letters, digits and ._@-")
    try:
        role = Role(role)
    except ValueError:
        raise Invalid(f"an account's role is one of: {', '.join(sorted(ACCOUNT_ROLES))}") from None
    if role not in ACCOUNT_ROLES:
        raise Invalid(f"an account's role is one of: {', '.join(sorted(ACCOUNT_ROLES))}")
    if role == Role.OFFICIAL and (scope is None or not _SCOPE_RE.match(scope)):
        raise Invalid("an official needs the union code of their scope")
    if role == Role.AUDITOR and scope is not None:
        raise Invalid("an auditor's account takes no scope")
    check_new_password(password)
    if conn.execute(select(accounts.c.account_id).where(accounts.c.username == name)).first():
        raise Conflict("that username is taken")
    account_id = "acct-" + secrets.token_hex(8)
    conn.execute(
        insert(accounts).values(
            account_id=account_id,
            username=name,
            role=role.value,
            scope=scope,
            password_hash=hash_password(password, cost),
            failed_count=0,
            created_at=now,
            disabled=False,
        )
    )
    found = get_account(conn, account_id)
    assert found is not None
    return found


def get_account(conn: Connection, account_id: str) -> Account | None:
    row = conn.execute(select(accounts).where(accounts.c.account_id == account_id)).first()
    return None if row is None else _account(row)


def find_account(conn: Connection, username: str) -> Account | None:
    """The account of ``username`` (any case), or ``None``."""
    name = normalise_username(username)
    if name is None:
        return None
    row = conn.execute(select(accounts).where(accounts.c.username == name)).first()
    return None if row is None else _account(row)


def list_accounts(conn: Connection) -> list[Account]:
    return [_account(r) for r in conn.execute(select(accounts).order_by(accounts.c.username))]


def _change_account(
    conn: Connection, username: str, values: dict[str, Any], *, end_sessions_at: int | None
) -> Account:
    """Set ``values`` on the account named ``username`` (revoking its sessions at
    ``end_sessions_at`` unless None); the account as it is then.

    Raises:
        NotFound: no such username.
    """
    account = find_account(conn, username)
    if account is None:
        raise NotFound("no such account")
    conn.execute(
        update(accounts).where(accounts.c.account_id == account.account_id).values(**values)
    )
    if end_sessions_at is not None:
        revoke_sessions_of(conn, account.account_id, end_sessions_at)
    found = get_account(conn, account.account_id)
    assert found is not None
    return found


def disable_account(conn: Connection, username: str, now: int) -> Account:
    """Disable an account and revoke its sessions (its access tokens stop working at once).

    Raises:
        NotFound: no such username.
    """
    return _change_account(conn, username, {"disabled": True}, end_sessions_at=now)


def unlock_account(conn: Connection, username: str) -> Account:
    """End the account's lock and its count of failures (an administrator's answer to someone
    locking it out by failing its password on purpose).

    Raises:
        NotFound: no such username.
    """
    account = _change_account(
        conn, username, {"failed_count": 0, "locked_until": None}, end_sessions_at=None
    )
    conn.execute(delete(login_failures).where(login_failures.c.who == _who(username)))
    return account


def reset_totp(conn: Connection, username: str, now: int) -> Account:
    """Switch the account's TOTP off (a lost authenticator) and revoke its sessions: its owner
    logs in again with the password alone and may set TOTP up anew.

    Raises:
        NotFound: no such username.
    """
    off = {"totp_secret": None, "totp_pending": None, "totp_last_step": None}
    return _change_account(conn, username, off, end_sessions_at=now)


def record_failure(
    conn: Connection, account_id: str, now: int, *, max_failures: int, lock_seconds: int
) -> bool:
    """Count one failed login; lock the account when that makes ``max_failures`` in a row.
    Whether it is locked now."""
    conn.execute(
        update(accounts)
        .where(accounts.c.account_id == account_id)
        .values(failed_count=accounts.c.failed_count + 1)
    )
    locked = conn.execute(
        update(accounts)
        .where(accounts.c.account_id == account_id, accounts.c.failed_count >= max_failures)
        .values(failed_count=0, locked_until=now + lock_seconds)
    ).rowcount
    return bool(locked)


def _who(username: str) -> bytes:
    return hashlib.sha256(b"login\n" + username.strip().lower().encode()).digest()


def _pair(username: str, client: str) -> bytes:
    return hashlib.sha256(_who(username) + b"\n" + client.encode()).digest()


def pair_locked_until(conn: Connection, username: str, client: str) -> int:
    """Until when (Unix seconds) ``username`` is locked for ``client``; 0 when it is not."""
    until = conn.execute(
        select(login_failures.c.locked_until).where(
            login_failures.c.pair == _pair(username, client)
        )
    ).scalar()
    return int(until or 0)


def record_pair_failure(
    conn: Connection,
    username: str,
    client: str,
    now: int,
    *,
    max_failures: int,
    lock_seconds: int,
) -> None:
    """Count one failure of ``username`` from ``client``; lock the pair when that makes
    ``max_failures`` in a row. Rows untouched for a day are dropped on the way."""
    conn.execute(delete(login_failures).where(login_failures.c.updated < now - 86_400))
    pair = _pair(username, client)
    row = conn.execute(
        select(login_failures.c.failed_count).where(login_failures.c.pair == pair)
    ).first()
    count = (row.failed_count if row else 0) + 1
    locked_until = now + lock_seconds if count >= max_failures else None
    values = {
        "failed_count": 0 if locked_until else count,
        "locked_until": locked_until,
        "updated": now,
    }
    if row is None:
        conn.execute(insert(login_failures).values(pair=pair, who=_who(username), **values))
    else:
        conn.execute(update(login_failures).where(login_failures.c.pair == pair).values(values))


def clear_pair(conn: Connection, username: str, client: str) -> None:
    """A successful login of ``username`` from ``client``: its count starts again."""
    conn.execute(delete(login_failures).where(login_failures.c.pair == _pair(username, client)))


def record_success(conn: Connection, account_id: str, totp_step: int | None) -> bool:
    """Reset the failure count and remember the TOTP step used. ``False`` when that step (or a
    later one) was used already: a replayed code."""
    query = update(accounts).where(accounts.c.account_id == account_id)
    if totp_step is not None:
        query = query.where(
            (accounts.c.totp_last_step.is_(None)) | (accounts.c.totp_last_step < totp_step)
        )
        query = query.values(totp_last_step=totp_step)
    return bool(conn.execute(query.values(failed_count=0, locked_until=None)).rowcount)


def set_totp_pending(conn: Connection, account_id: str, sealed: str) -> None:
    conn.execute(
        update(accounts).where(accounts.c.account_id == account_id).values(totp_pending=sealed)
    )


def enable_totp(conn: Connection, account: Account, sealed_secret: str, step: int) -> bool:
    """Make the pending TOTP secret the account's (once: ``False`` if it changed meanwhile)."""
    return bool(
        conn.execute(
            update(accounts)
            .where(
                accounts.c.account_id == account.account_id,
                accounts.c.totp_pending == account.totp_pending,
                accounts.c.totp_secret.is_(None),
            )
            .values(totp_secret=sealed_secret, totp_pending=None, totp_last_step=step)
        ).rowcount
    )


# -- sessions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    subject: str
    role: Role
    scope: str | None
    expires_at: int
    revoked_at: int | None

    def active_at(self, now: int) -> bool:
        return self.revoked_at is None and now < self.expires_at


def _session(row: Any) -> Session:
    m = row._mapping
    return Session(
        session_id=m["session_id"],
        subject=m["subject"],
        role=Role(m["role"]),
        scope=m["scope"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
    )


_SESSION_COLUMNS = [
    auth_sessions.c[n]
    for n in ("session_id", "subject", "role", "scope", "expires_at", "revoked_at")
]


def new_refresh_token() -> str:
    """32 random bytes, base64url."""
    return secrets.token_urlsafe(32)


def create_session(
    conn: Connection, *, subject: str, role: Role, scope: str | None, now: int, ttl: int
) -> tuple[Session, str]:
    """Open a session; it and its first refresh token."""
    conn.execute(delete(auth_sessions).where(auth_sessions.c.expires_at < now))
    conn.execute(delete(auth_refresh_retired).where(auth_refresh_retired.c.expires_at < now))
    session_id = secrets.token_urlsafe(16)
    refresh = new_refresh_token()
    conn.execute(
        insert(auth_sessions).values(
            session_id=session_id,
            subject=subject,
            role=role.value,
            scope=scope,
            refresh_hash=token_hash(refresh),
            expires_at=now + ttl,
            created_at=now,
        )
    )
    return Session(session_id, subject, role, scope, now + ttl, None), refresh


_GET_SESSION = (
    "SELECT session_id, subject, role, scope, expires_at, revoked_at FROM auth_sessions"
    " WHERE session_id = ?"
)


def get_session(conn: Connection, session_id: str) -> Session | None:
    # Every authenticated request runs this: driver SQL, without SQLAlchemy's statement work.
    row = driver_execute(conn, _GET_SESSION, (session_id,)).fetchone()
    if row is None:
        return None
    return Session(row[0], row[1], Role(row[2]), row[3], row[4], row[5])


class RefreshRefused(LedgerError):
    """The refresh token is unknown, expired or revoked, or was rotated out already.

    ``revoke`` names a session to revoke (reuse means that someone else holds a copy). Raising
    rolls the transaction back, so the caller revokes it in a transaction of its own.
    """

    code = "unauthorized"

    def __init__(self, message: str, *, revoke: str | None = None) -> None:
        super().__init__(message)
        self.revoke = revoke


def rotate_refresh(conn: Connection, refresh_token: str, now: int) -> tuple[Session, str]:
    """Swap a refresh token for a new one in the same session.

    Raises:
        RefreshRefused: see the class.
    """
    old = token_hash(refresh_token)
    row = conn.execute(select(*_SESSION_COLUMNS).where(auth_sessions.c.refresh_hash == old)).first()
    if row is None:
        retired = conn.execute(
            select(auth_refresh_retired.c.session_id).where(
                auth_refresh_retired.c.refresh_hash == old
            )
        ).scalar()
        if retired is not None:
            raise RefreshRefused("rotated-out refresh token reused", revoke=retired)
        raise RefreshRefused("unknown refresh token")
    session = _session(row)
    if not session.active_at(now):
        raise RefreshRefused("session expired or revoked")
    fresh = new_refresh_token()
    swapped = conn.execute(
        update(auth_sessions)
        .where(
            auth_sessions.c.session_id == session.session_id,
            auth_sessions.c.refresh_hash == old,
            auth_sessions.c.revoked_at.is_(None),
        )
        .values(refresh_hash=token_hash(fresh))
    ).rowcount
    if not swapped:  # a concurrent refresh with the same token won: that is reuse too
        raise RefreshRefused("refresh token used twice at once", revoke=session.session_id)
    conn.execute(
        insert(auth_refresh_retired).values(
            refresh_hash=old, session_id=session.session_id, expires_at=session.expires_at
        )
    )
    return session, fresh


def revoke_session(conn: Connection, session_id: str, now: int) -> None:
    conn.execute(
        update(auth_sessions)
        .where(auth_sessions.c.session_id == session_id, auth_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def revoke_sessions_of(conn: Connection, subject: str, now: int) -> None:
    conn.execute(
        update(auth_sessions)
        .where(auth_sessions.c.subject == subject, auth_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


# -- members' one-time codes -----------------------------------------------------------------


def otp_hash(key: bytes, otp_id: str, member_id: str, code: str) -> bytes:
    """A keyed hash of a code: six digits are too few to store under a plain hash."""
    return hmac.new(key, f"{otp_id}\n{member_id}\n{code}".encode(), hashlib.sha256).digest()


def store_otp(
    conn: Connection, *, key: bytes, member_id: str, code: str, now: int, ttl: int
) -> None:
    """Store a member's new code; any earlier code of theirs stops working."""
    conn.execute(delete(auth_otps).where(auth_otps.c.expires_at < now))
    conn.execute(delete(auth_otps).where(auth_otps.c.member_id == member_id))
    otp_id = secrets.token_hex(12)
    conn.execute(
        insert(auth_otps).values(
            otp_id=otp_id,
            member_id=member_id,
            code_hash=otp_hash(key, otp_id, member_id, code),
            expires_at=now + ttl,
            attempts=0,
            created_at=now,
        )
    )


def use_otp(
    conn: Connection, *, key: bytes, member_id: str, code: str, now: int, max_attempts: int
) -> bool:
    """Whether ``code`` is the member's current code; a right code is used up, and every try
    counts against ``max_attempts`` before the comparison (parallel guesses included)."""
    row = conn.execute(
        select(auth_otps.c.otp_id, auth_otps.c.code_hash)
        .where(auth_otps.c.member_id == member_id, auth_otps.c.expires_at > now)
        .order_by(auth_otps.c.created_at.desc())
        .limit(1)
    ).first()
    if row is None:
        return False
    otp_id, expected = row
    counted = conn.execute(
        update(auth_otps)
        .where(auth_otps.c.otp_id == otp_id, auth_otps.c.attempts < max_attempts)
        .values(attempts=auth_otps.c.attempts + 1)
    ).rowcount
    if not counted or not hmac.compare_digest(otp_hash(key, otp_id, member_id, code), expected):
        return False
    return bool(conn.execute(delete(auth_otps).where(auth_otps.c.otp_id == otp_id)).rowcount)


# -- station challenges ----------------------------------------------------------------------


def store_challenge(conn: Connection, *, station_id: str, now: int, ttl: int) -> str:
    """A new challenge for ``station_id`` (base64url of 32 random bytes)."""
    conn.execute(delete(auth_challenges).where(auth_challenges.c.expires_at <= now))
    challenge = secrets.token_urlsafe(32)
    conn.execute(
        insert(auth_challenges).values(
            challenge=challenge, station_id=station_id, expires_at=now + ttl
        )
    )
    return challenge


def use_challenge(conn: Connection, *, station_id: str, challenge: str, now: int) -> bool:
    """Use up ``challenge``: ``True`` once, if it was issued to ``station_id`` and is fresh."""
    return bool(
        conn.execute(
            delete(auth_challenges).where(
                auth_challenges.c.challenge == challenge,
                auth_challenges.c.station_id == station_id,
                auth_challenges.c.expires_at > now,
            )
        ).rowcount
    )


# -- grants on the ledger ----------------------------------------------------------------------
# Who may act, and over which subtree, is part of the record: creating and disabling an account
# are ledger events (``AccountCreated``/``AccountDisabled``, docs/events.md), appended in the
# same transaction as the row. The event names the account by its pseudonymous id (the actor
# key id of everything it does later), its role and scope; never the username or a secret.


def grant_account(
    tx: Tx,
    actor: Actor,
    *,
    username: str,
    password: str,
    role: Role | str,
    scope: str | None = None,
    cost: PasswordCost | None = None,
) -> Account:
    """:func:`create_account`, checked against the union tree and recorded on the ledger.

    Raises:
        Forbidden: only the system (the operator's CLI, the demo) creates accounts.
        Invalid: as :func:`create_account`; or an official's scope is not an open union.
        Conflict: the username is taken.
    """
    from ledger import unions  # noqa: PLC0415  (unions' tables register with the schema)

    if actor.role is not Role.SYSTEM:
        raise Forbidden("accounts are created by the operator")
    if scope is not None:
        union = unions.get_union(tx.conn, scope)
        if union is None or not union.active:
            raise Invalid(f"no open union has the code {scope!r}")
    account = create_account(
        tx.conn,
        username=username,
        password=password,
        role=role,
        scope=scope,
        now=int(tx.now.timestamp()),
        cost=cost,
    )
    tx.append(
        "AccountCreated",
        actor.ledger_actor,
        {"account": account.account_id, "role": account.role.value, "scope": account.scope},
    )
    return account


def withdraw_account(tx: Tx, actor: Actor, username: str) -> Account:
    """:func:`disable_account`, recorded on the ledger (``AccountDisabled``).

    Raises:
        Forbidden: only the system disables accounts.
        NotFound: no such username.
        Conflict: the account is already disabled.
    """
    if actor.role is not Role.SYSTEM:
        raise Forbidden("accounts are disabled by the operator")
    found = find_account(tx.conn, username)
    if found is not None and found.disabled:
        raise Conflict("that account is already disabled")
    account = disable_account(tx.conn, username, int(tx.now.timestamp()))
    tx.append("AccountDisabled", actor.ledger_actor, {"account": account.account_id})
    return account
