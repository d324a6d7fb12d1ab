"""Authentication: who is calling. The one place where it is enforced.

Routes declare who may call them with the dependencies at the end of this module
(``ActorDep``, ``OfficialDep``, ``AuditorOrOfficialDep``, ``MemberDep``, ``StationDep`` or
``Depends(require(...))``); what an actor may touch (their subtree) is for the domain to check.

Access tokens are JWTs (RFC 9068 ``typ: at+jwt``) signed EdDSA with the keyring's current ``api``
key, valid 10 minutes, bound to a session (``sid``) that logout or refresh-token reuse revokes.
Every way a token can be bad gives the same 401. Logins (:class:`AuthService`) answer failures
with one ``invalid-credentials`` problem whatever the reason, so a caller cannot tell an unknown
username, phone or station from a wrong secret. Lock-out (5 failures in a row lock a username
for the client address they came from, 50 lock the account for every address, each for 15
minutes) answers 429 ``account-locked`` with ``Retry-After``; unknown usernames lock the same
way, so even the lock does not reveal that an account exists.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import jwt
import pyotp
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine

import keys
from api import problems
from api.deps import ServicesDep
from api.problems import Problem, ProblemType
from api.settings import Settings
from ledger import accounts, stations
from ledger.accounts import PasswordCost
from ledger.domain import Actor, Conflict, Role
from ledger.members import Members, Status, get_member

log = logging.getLogger("unionledger.auth")
otp_log = logging.getLogger("unionledger.otp")

ISSUER = "unionledger"
ACCESS_TYP = "at+jwt"
# The keyring secret that seals TOTP secrets and keys one-time-code hashes (its name).
ACCOUNTS_SECRET = "accounts"  # noqa: S105
STATION_LOGIN_CONTEXT = b"unionledger-station-login/1\n"
VERIFIED_TOKEN_CACHE = 10_000  # access tokens whose signature verified, kept while in use
_CLAIMS = ["iss", "sub", "role", "sid", "iat", "exp", "jti"]

for _type in (
    ProblemType("invalid-credentials", 401, "The credentials are not valid"),
    ProblemType("account-locked", 429, "Too many failed logins: the account is locked"),
):
    problems.TYPES.setdefault(_type.slug, _type)


class AuthFailure(Exception):
    """A login refused; :func:`install` turns it into problem+json with its headers."""

    def __init__(self, slug: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.slug, self.detail, self.headers = slug, detail, headers or {}


def invalid_credentials() -> AuthFailure:
    return AuthFailure("invalid-credentials", "authentication failed")


def locked(retry_after: float) -> AuthFailure:
    seconds = str(max(1, math.ceil(retry_after)))
    return AuthFailure(
        "account-locked",
        f"locked after repeated failures; retry in {seconds} s",
        {"Retry-After": seconds},
    )


def throttled(retry_after: float) -> AuthFailure:
    seconds = str(max(1, math.ceil(retry_after)))
    return AuthFailure("too-many-requests", "too many attempts", {"Retry-After": seconds})


def install(app: FastAPI) -> None:
    """Answer :class:`AuthFailure` with problem+json (and ``Retry-After`` where it applies)."""

    async def on_auth_failure(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AuthFailure)
        return problems.problem_response(
            exc.slug,
            status=problems.TYPES[exc.slug].status,
            detail=exc.detail,
            instance=request.url.path,
            headers=exc.headers,
        )

    app.add_exception_handler(AuthFailure, on_auth_failure)


# -- pluggable parts -----------------------------------------------------------------------------


class MemberDirectory(Protocol):
    """Finds a member by phone, and says whether a member may still hold a session (the
    members module provides the real one: :class:`MembersDirectory`)."""

    def member_for_phone(self, conn: Connection, phone: str) -> str | None:
        """The member id of ``phone``, or ``None``."""
        ...

    def may_hold_session(self, conn: Connection, member_id: str) -> bool:
        """False once the member is erased (or was rejected): their sessions end."""
        ...


class OtpSender(Protocol):
    def send(self, member_id: str, phone: str, code: str) -> None:
        """Deliver ``code`` to ``phone``. Must not log the phone."""
        ...


class NoMembers:
    """The directory until the members module provides one: it finds nobody."""

    def member_for_phone(self, conn: Connection, phone: str) -> str | None:
        return None

    def may_hold_session(self, conn: Connection, member_id: str) -> bool:
        return False


@dataclass(frozen=True)
class MembersDirectory:
    """The members module as the directory. A member who left keeps their session (their own
    history and receipts stay theirs to see); an erased or rejected one does not."""

    members: Members

    def member_for_phone(self, conn: Connection, phone: str) -> str | None:
        return self.members.member_for_phone(conn, phone)

    def may_hold_session(self, conn: Connection, member_id: str) -> bool:
        row = get_member(conn, member_id)
        return row is not None and row.status not in (Status.ERASED, Status.REJECTED)


class LogOtpSender:
    """Development sink: logs the code (never the phone). Demo mode only."""

    def send(self, member_id: str, phone: str, code: str) -> None:
        otp_log.info("OTP for member %s: %s", member_id, code)


class UndeliverableOtpSender:
    """Outside demo mode until an SMS gateway is configured: codes go nowhere (loudly)."""

    def send(self, member_id: str, phone: str, code: str) -> None:
        otp_log.error("no OTP delivery is configured: a code for member %s was dropped", member_id)


class RateLimiter:
    """Token buckets per key (``capacity`` attempts, refilled over ``period`` seconds), in
    memory: per process, forgotten on restart. Keys are pseudonymous or hashed."""

    def __init__(self, capacity: int, period: float, max_keys: int = 100_000) -> None:
        self.capacity, self.rate, self.max_keys = capacity, capacity / period, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str, now: float) -> float | None:
        """Take one attempt for ``key``; ``None`` if allowed, else seconds until the next one."""
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.capacity), now))
            tokens = min(float(self.capacity), tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return None if allowed else (1 - tokens) / self.rate


class _PhantomLocks:
    """Failure counts of usernames that have no (enabled) account, so they lock like real ones."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._state: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_keys = max_keys

    @staticmethod
    def _key(username: str) -> bytes:
        return hashlib.sha256(b"phantom\n" + username.strip().lower().encode()).digest()

    def locked_until(self, username: str) -> int:
        with self._lock:
            return self._state.get(self._key(username), (0, 0))[1]

    def fail(self, username: str, now: int, policy: AuthPolicy) -> None:
        with self._lock:
            key = self._key(username)
            count, until = self._state.pop(key, (0, 0))
            count += 1
            if count >= policy.max_account_failures:
                count, until = 0, now + policy.lock_seconds
            self._state[key] = (count, until)
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)


@dataclass(frozen=True)
class AuthPolicy:
    access_ttl: int = 600  # seconds an access token lives
    session_ttl: int = 12 * 3600  # a session (and its refresh tokens) ends this long after login
    leeway: int = 30  # clock skew allowed on exp / iat
    max_failures: int = 5  # failed logins in a row that lock an account for one client address
    max_account_failures: int = 50  # ... that lock it for every address (a distributed guess)
    lock_seconds: int = 15 * 60
    client_attempts: int = 20  # login, OTP and station attempts per client IP per minute, each
    otp_ttl: int = 5 * 60
    otp_attempts: int = 5  # guesses per code
    otp_per_member: int = 5  # codes sent per member per 15 minutes (more are silently dropped)
    challenge_ttl: int = 60
    password_cost: PasswordCost = field(default_factory=PasswordCost)
    concurrent_hashes: int = 4  # Argon2id runs at once (each takes its memory cost)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Grant:
    """A verified access token: the actor and the session it belongs to."""

    actor: Actor
    session_id: str
    token_id: str


# -- the service -------------------------------------------------------------------------------


@dataclass
class AuthService:
    """Logins, tokens and sessions. ``clock``, ``directory`` and ``sender`` are injectable."""

    engine: Engine
    keyring: keys.Keyring
    clock: Callable[[], datetime] = keys.utc_now
    directory: MemberDirectory = field(default_factory=NoMembers)
    sender: OtpSender = field(default_factory=LogOtpSender)
    policy: AuthPolicy = field(default_factory=AuthPolicy)

    def __post_init__(self) -> None:
        p = self.policy
        self._per_client = RateLimiter(p.client_attempts, 60)
        self._per_member = RateLimiter(p.otp_per_member, 15 * 60)
        self._phantoms = _PhantomLocks()
        self._hashing = threading.BoundedSemaphore(p.concurrent_hashes)
        # Verified when a username is unknown, so that answering takes as long as for a real one.
        self._dummy_hash = accounts.hash_password(secrets.token_urlsafe(16), p.password_cost)
        self._verified_tokens: dict[str, dict[str, Any]] = {}
        self._verified_lock = threading.Lock()
        # SQLite: current_grant reads the session on the event loop, through a connection of
        # that thread's own (a pooled one could make the loop wait for the pool).
        self.reads_inline = self.engine.dialect.name == "sqlite"
        self._inline = threading.local()

    @classmethod
    def for_settings(cls, settings: Settings, engine: Engine, keyring: keys.Keyring) -> AuthService:
        sender: OtpSender = LogOtpSender() if settings.demo else UndeliverableOtpSender()
        return cls(engine=engine, keyring=keyring, sender=sender)

    def _now(self) -> int:
        return int(self.clock().timestamp())

    def throttle(self, action: str, client: str) -> None:
        """Count one ``action`` by ``client`` (20 a minute per client and action).

        Raises:
            AuthFailure: too-many-requests, with Retry-After.
        """
        self._throttle(action, client)

    def _throttle(self, action: str, client: str) -> None:
        wait = self._per_client.hit(f"{action}\n{client}", self.clock().timestamp())
        if wait is not None:
            raise throttled(wait)

    def _secret(self, purpose: str) -> bytes:
        return accounts.subkey(self.keyring.secret(ACCOUNTS_SECRET), purpose)

    # -- tokens --------------------------------------------------------------------------------

    def _open_session(self, conn: Connection, actor: Actor, now: int) -> TokenPair:
        session, refresh = accounts.create_session(
            conn,
            subject=actor.key_id,
            role=actor.role,
            scope=actor.scope,
            now=now,
            ttl=self.policy.session_ttl,
        )
        return TokenPair(
            self.issue(actor, session.session_id, now), refresh, self.policy.access_ttl
        )

    def issue(self, actor: Actor, session_id: str, now: int) -> str:
        """An access token for ``actor`` in session ``session_id``."""
        record = self.keyring.current(keys.Role.API, datetime.fromtimestamp(now, UTC))
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": actor.key_id,
            "role": actor.role.value,
            "sid": session_id,
            "iat": now,
            "exp": now + self.policy.access_ttl,
            "jti": secrets.token_urlsafe(16),
        }
        if actor.scope is not None:
            claims["scope"] = actor.scope
        return jwt.encode(
            claims,
            self.keyring.private_key(record.kid).to_cryptography(),
            algorithm="EdDSA",
            headers={"kid": record.kid, "typ": ACCESS_TYP},
        )

    def authenticate(self, token: str) -> Grant:
        """The grant of a valid access token of a live session.

        Raises:
            HTTPException: 401, the same for every reason (the reason is logged, not told).
        """
        try:
            return self._verify(token)
        except (
            jwt.PyJWTError,
            keys.KeysError,
            ValueError,
            TypeError,
            KeyError,
            OverflowError,
            OSError,
        ) as e:
            log.info("access token refused: %r", e)
            raise HTTPException(
                401, "invalid or expired access token", {"WWW-Authenticate": _bearer_error}
            ) from None

    def grant_or_none(self, token: str) -> Grant | None:
        """The grant of ``token`` as :meth:`authenticate` finds it, or None (not logged: the
        caller falls back to the route, whose :meth:`authenticate` logs and answers 401)."""
        try:
            return self._verify(token)
        except Exception:  # every refusal; the fallback path meets it again and answers
            return None

    def use_keyring(self, keyring: keys.Keyring) -> None:
        """Sign and verify with ``keyring`` from now on (api/keywatch.py), forgetting every token
        verified with the keys before: a token of a key revoked meanwhile is judged again."""
        with self._verified_lock:
            self.keyring = keyring
            self._verified_tokens.clear()

    def _signed_claims(self, token: str) -> dict[str, Any]:
        """Steps 1-3 (form, key, signature) of :meth:`_verify`, remembered per token: a station
        presents the same access token for minutes, and its signature is all that is costly.
        Only tokens that verified are remembered, and only while they are unexpired; the time
        and session checks still run on every request."""
        with self._verified_lock:
            claims = self._verified_tokens.get(token)
        if claims is not None:
            return claims
        claims = self._check_signature(token)
        with self._verified_lock:
            if len(self._verified_tokens) >= VERIFIED_TOKEN_CACHE:
                self._verified_tokens.clear()  # bounded; refills with the tokens in use
            self._verified_tokens[token] = claims
        return claims

    def _verify(self, token: str) -> Grant:
        claims = self._signed_claims(token)
        iat = claims["iat"]
        # 4. Times: not expired, not from the future, never longer-lived than we issue.
        now, leeway = self._now(), self.policy.leeway
        exp = claims["exp"]
        if not isinstance(exp, int) or isinstance(exp, bool) or exp + leeway <= now:
            raise ValueError("expired")
        if iat > now + leeway or exp - iat > self.policy.access_ttl:
            raise ValueError("bad iat/exp")
        return self._grant(claims, now)

    def _check_signature(self, token: str) -> dict[str, Any]:
        # 0. The form: three strict base64url parts (no padding, no other characters, no
        # non-zero trailing bits), so that one token has one spelling: pyjwt would also take
        # a signature with "==" appended.
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("not three parts")
        for part in parts:
            keys.b64url_decode(part)  # raises ValueError on a non-canonical part
        # 1. The header: our algorithm and token type only (alg=none never reaches a key).
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "EdDSA" or header.get("typ") != ACCESS_TYP:
            raise ValueError("not an EdDSA at+jwt")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise ValueError("no kid")
        # 2. The key: the kid is a hint; the keyring checks role and validity at iat.
        unverified = jwt.decode(token, options={"verify_signature": False})
        iat = unverified.get("iat")
        if not isinstance(iat, int) or isinstance(iat, bool):
            raise ValueError("iat is not an integer")
        signed_at = datetime.fromtimestamp(iat, UTC)
        public = self.keyring.verification_key(kid, keys.Role.API, signed_at)
        # 3. The signature and the issuer (times are checked below against our clock).
        claims = jwt.decode(
            token,
            public.to_cryptography(),
            algorithms=["EdDSA"],
            issuer=ISSUER,
            options={
                "require": _CLAIMS,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        if claims.get("iat") != iat:
            raise ValueError("iat changed between the unverified and the verified read")
        return dict(claims)

    def _grant(self, claims: dict[str, Any], now: int) -> Grant:
        # 5. The actor, and a live session that it belongs to.
        role, scope, sid = Role(claims["role"]), claims.get("scope"), claims["sid"]
        if role == Role.SYSTEM or (scope is None) != (role == Role.AUDITOR):
            raise ValueError("bad role or scope")
        with self._session_reader() as conn:
            session = accounts.get_session(conn, str(sid))
            if session is None or not session.active_at(now):
                raise ValueError("session ended")
            if (session.subject, session.role, session.scope) != (claims["sub"], role, scope):
                raise ValueError("token does not match its session")
            if role == Role.MEMBER and not self.directory.may_hold_session(conn, session.subject):
                raise ValueError("the member is erased")
        return Grant(Actor(role, session.subject, session.scope), session.session_id, claims["jti"])

    @contextmanager
    def _session_reader(self) -> Iterator[Connection]:
        """A connection for the session check: on SQLite this thread's own, kept open, its
        read transaction ended after each use (a new snapshot each time); else a pooled one."""
        if not self.reads_inline:
            with self.engine.connect() as pooled:
                yield pooled
            return
        conn: Connection | None = getattr(self._inline, "conn", None)
        if conn is None or conn.closed:
            conn = self._inline.conn = self.engine.connect()
        try:
            yield conn
        finally:
            conn.rollback()

    def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token. A rotated-out one revokes its session.

        Raises:
            HTTPException: 401.
        """
        now = self._now()
        try:
            with self.engine.begin() as conn:
                session, fresh = accounts.rotate_refresh(conn, refresh_token, now)
                self._check_still_allowed(conn, session, now)
        except accounts.RefreshRefused as e:
            if e.revoke is not None:
                with self.engine.begin() as conn:  # after the rollback: the revocation stays
                    accounts.revoke_session(conn, e.revoke, now)
                log.warning("refresh refused (%s): session %s revoked", e, e.revoke)
            raise HTTPException(
                401, "invalid refresh token", {"WWW-Authenticate": _bearer_error}
            ) from None
        actor = Actor(session.role, session.subject, session.scope)
        return TokenPair(self.issue(actor, session.session_id, now), fresh, self.policy.access_ttl)

    def _check_still_allowed(self, conn: Connection, session: accounts.Session, now: int) -> None:
        """An account disabled or a station key revoked since login ends the session."""
        allowed = True
        if session.role in accounts.ACCOUNT_ROLES:
            account = accounts.get_account(conn, session.subject)
            allowed = account is not None and not account.disabled
        elif session.role == Role.STATION:
            allowed = bool(self._station_keys(conn, session.subject, now))
        elif session.role == Role.MEMBER:
            allowed = self.directory.may_hold_session(conn, session.subject)
        if not allowed:
            raise accounts.RefreshRefused("no longer allowed", revoke=session.session_id)

    def logout(self, grant: Grant) -> None:
        with self.engine.begin() as conn:
            accounts.revoke_session(conn, grant.session_id, self._now())

    # -- officials and auditors -------------------------------------------------------------

    def login(self, username: str, password: str, totp: str | None, client: str) -> TokenPair:
        """Raises:
        AuthFailure: invalid-credentials, account-locked or too-many-requests."""
        self._throttle("login", client)
        now = self._now()
        with self.engine.connect() as conn:
            account = accounts.find_account(conn, username)
            pair_until = accounts.pair_locked_until(conn, username, client)
        if pair_until > now:
            raise locked(pair_until - now)
        if account is None or account.disabled:
            if self._phantoms.locked_until(username) > now:
                raise locked(self._phantoms.locked_until(username) - now)
            with self._hashing:
                accounts.password_matches(self._dummy_hash, password)
            with self.engine.begin() as conn:
                self._failed(conn, username, None, client, now)
            log.info("login failed: no enabled account of that name")
            raise invalid_credentials()
        if account.locked_at(now):
            assert account.locked_until is not None
            raise locked(account.locked_until - now)
        with self._hashing:
            ok = accounts.password_matches(account.password_hash, password)
        step = self._totp_step(account, totp, now) if ok and account.totp_enabled else None
        ok = ok and (step is not None or not account.totp_enabled)
        with self.engine.begin() as conn:
            if ok and accounts.record_success(conn, account.account_id, step):
                accounts.clear_pair(conn, username, client)
                actor = Actor(account.role, account.account_id, account.scope)
                return self._open_session(conn, actor, now)
            self._failed(conn, username, account.account_id, client, now)
        log.info("login failed for account %s", account.account_id)
        raise invalid_credentials()

    def _failed(
        self, conn: Connection, username: str, account_id: str | None, client: str, now: int
    ) -> None:
        """Count a failed password (or TOTP) for ``username`` from ``client``: toward the lock
        of that pair (``max_failures``) and toward the account's lock for every address
        (``max_account_failures``; in memory for a name without an account)."""
        p = self.policy
        accounts.record_pair_failure(
            conn, username, client, now, max_failures=p.max_failures, lock_seconds=p.lock_seconds
        )
        if account_id is None:
            self._phantoms.fail(username, now, p)
        else:
            accounts.record_failure(
                conn,
                account_id,
                now,
                max_failures=p.max_account_failures,
                lock_seconds=p.lock_seconds,
            )

    def _totp_step(self, account: accounts.Account, code: str | None, now: int) -> int | None:
        """The time step ``code`` belongs to (±1 step of drift), or ``None``."""
        assert account.totp_secret is not None
        secret = accounts.open_totp(
            self.keyring.secret(ACCOUNTS_SECRET),
            account.account_id,
            account.totp_secret,
            pending=False,
        )
        return _match_totp(secret, code, now, after=account.totp_last_step)

    def totp_setup(self, actor: Actor, password: str, client: str) -> str:
        """A new TOTP secret as an otpauth:// URI, shown once; it counts after confirmation.
        The account's password is asked again: an access token alone (perhaps stolen) must not
        be enough to bind a second factor that its owner does not hold. A wrong password counts
        toward the locks, as at login (``client``: the caller's address).

        Raises:
            Conflict: TOTP is on already. AuthFailure: invalid-credentials, account-locked,
            too-many-requests.
        """
        self._throttle("totp", actor.key_id)
        account = self._account_of(actor)
        if account.totp_enabled:
            raise Conflict("TOTP is already enabled for this account")
        now = self._now()
        with self.engine.connect() as conn:
            pair_until = accounts.pair_locked_until(conn, account.username, client)
        if pair_until > now:
            raise locked(pair_until - now)
        if account.locked_at(now):
            assert account.locked_until is not None
            raise locked(account.locked_until - now)
        with self._hashing:
            ok = accounts.password_matches(account.password_hash, password)
        if not ok:
            with self.engine.begin() as conn:
                self._failed(conn, account.username, account.account_id, client, now)
            log.info("totp setup refused: wrong password for account %s", account.account_id)
            raise invalid_credentials()
        secret = pyotp.random_base32()
        sealed = accounts.seal_totp(
            self.keyring.secret(ACCOUNTS_SECRET), account.account_id, secret, pending=True
        )
        with self.engine.begin() as conn:
            accounts.set_totp_pending(conn, account.account_id, sealed)
        return pyotp.TOTP(secret).provisioning_uri(name=account.username, issuer_name="UnionLedger")

    def totp_confirm(self, actor: Actor, code: str) -> None:
        """Enable the pending TOTP secret if ``code`` matches it.

        Raises:
            Conflict: nothing pending (or TOTP already on). Problem: the code does not match.
        """
        self._throttle("totp", actor.key_id)
        account = self._account_of(actor)
        if account.totp_enabled or account.totp_pending is None:
            raise Conflict("no TOTP setup is pending: call /v1/auth/totp/setup first")
        master = self.keyring.secret(ACCOUNTS_SECRET)
        secret = accounts.open_totp(master, account.account_id, account.totp_pending, pending=True)
        step = _match_totp(secret, code, self._now(), after=None)
        if step is None:
            raise Problem("invalid-request", "the code does not match")
        sealed = accounts.seal_totp(master, account.account_id, secret, pending=False)
        with self.engine.begin() as conn:
            if not accounts.enable_totp(conn, account, sealed, step):
                raise Conflict("the TOTP setup changed meanwhile: start again")

    def username_of(self, actor: Actor) -> str | None:
        """The login name behind an official's or auditor's token; None for others."""
        if actor.role not in accounts.ACCOUNT_ROLES:
            return None
        with self.engine.connect() as conn:
            account = accounts.get_account(conn, actor.key_id)
        return None if account is None else account.username

    def _account_of(self, actor: Actor) -> accounts.Account:
        with self.engine.connect() as conn:
            account = accounts.get_account(conn, actor.key_id)
        if account is None or actor.role not in accounts.ACCOUNT_ROLES:
            raise Problem("forbidden", "only officials and auditors have accounts")
        return account

    # -- members ---------------------------------------------------------------------------------

    def otp_request(self, phone: str, client: str) -> Callable[[], None]:
        """Throttle, then the work to run *after* answering: look the phone up, store a code and
        send it. Neither the answer nor its timing may tell whether the phone is known.

        Raises:
            AuthFailure: too-many-requests.
        """
        self._throttle("otp", client)
        return lambda: self._issue_otp(phone)

    def _issue_otp(self, phone: str) -> None:
        now = self._now()
        with self.engine.begin() as conn:
            member_id = self.directory.member_for_phone(conn, phone)
            if member_id is None:
                return
            if self._per_member.hit(member_id, float(now)) is not None:
                log.info("OTP not sent: member %s asked too often", member_id)
                return
            code = f"{secrets.randbelow(10**6):06d}"
            accounts.store_otp(
                conn,
                key=self._secret("otp"),
                member_id=member_id,
                code=code,
                now=now,
                ttl=self.policy.otp_ttl,
            )
        self.sender.send(member_id, phone, code)

    def otp_verify(self, phone: str, code: str, client: str) -> TokenPair:
        """Raises:
        AuthFailure: invalid-credentials (unknown phone, wrong, used or expired code)."""
        self._throttle("otp", client)
        now = self._now()
        with self.engine.begin() as conn:
            member_id = self.directory.member_for_phone(conn, phone)
            if member_id is not None and accounts.use_otp(
                conn,
                key=self._secret("otp"),
                member_id=member_id,
                code=code,
                now=now,
                max_attempts=self.policy.otp_attempts,
            ):
                return self._open_session(conn, Actor(Role.MEMBER, member_id, member_id), now)
        log.info("member login failed")
        raise invalid_credentials()

    # -- stations ---------------------------------------------------------------------------------

    def station_challenge(self, station_id: str, client: str) -> str:
        """A fresh challenge for any station id (whether the station exists is not told)."""
        self._throttle("station", client)
        with self.engine.begin() as conn:
            return accounts.store_challenge(
                conn, station_id=station_id, now=self._now(), ttl=self.policy.challenge_ttl
            )

    def station_verify(
        self, station_id: str, challenge: str, signature: str, client: str
    ) -> TokenPair:
        """Log a station in if ``signature`` is its device key's over the challenge.

        Raises:
            AuthFailure: invalid-credentials (unknown, used or expired challenge, no valid
                key for the station, or a signature none of them made).
        """
        self._throttle("station", client)
        now = self._now()
        message = STATION_LOGIN_CONTEXT + f"{station_id}\n{challenge}".encode()
        with self.engine.begin() as conn:
            if not accounts.use_challenge(
                conn, station_id=station_id, challenge=challenge, now=now
            ):
                log.info("station %s login: unknown, used or expired challenge", station_id)
                raise invalid_credentials()
        try:
            raw = keys.b64url_decode(signature)
        except ValueError:
            raw = b""
        with self.engine.connect() as conn:
            candidates = self._station_keys(conn, station_id, now)
        for public in candidates:
            try:
                public.verify(raw, message)
            except keys.KeysError:
                continue
            with self.engine.begin() as conn:
                actor = Actor(Role.STATION, station_id, station_id)
                return self._open_session(conn, actor, now)
        log.info("station %s login: no valid key of the station made that signature", station_id)
        raise invalid_credentials()

    def _station_keys(self, conn: Connection, station_id: str, now: int) -> list[keys.PublicKey]:
        """The station's device keys valid now: those registered on the ledger and not revoked
        (docs/stations.md), and the keyring's ``station`` keys of that scope. None at all for a
        station that the ledger closed."""
        row = stations.get_station(conn, station_id)
        if row is not None and not row.active:
            return []
        valid = stations.station_public_keys(conn, station_id)
        at = datetime.fromtimestamp(now, UTC)
        for record in self.keyring.of_role(keys.Role.STATION, station_id):
            try:
                record.check_valid_at(at)
            except keys.KeysError:
                continue
            valid.append(record.public_key)
        return valid


def _match_totp(secret: str, code: str | None, now: int, *, after: int | None) -> int | None:
    if code is None:
        return None
    code = code.replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    found = None
    for offset in (-1, 0, 1):  # one step of clock drift either way, all compared
        if secrets.compare_digest(totp.generate_otp(current + offset), code):
            found = current + offset
    if found is None or (after is not None and found <= after):
        return None
    return found


# -- dependencies ----------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="An access token from /v1/auth/...")
_bearer_error = 'Bearer error="invalid_token"'


async def get_auth(services: ServicesDep) -> AuthService:
    if services.auth is None:
        raise Problem("unavailable", "authentication is not configured")
    return services.auth


AuthDep = Annotated[AuthService, Depends(get_auth)]


async def current_grant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Grant:
    """The verified access token of the request.

    The session is read on every request. On SQLite the read runs on the event loop (a WAL
    reader never waits for a writer: tens of microseconds, less than a thread-pool hop); on
    PostgreSQL, a network round trip, in the thread pool.

    Raises:
        HTTPException: 401 problem+json with ``WWW-Authenticate: Bearer``.
        Problem: 503 when authentication is not configured.
    """
    auth = request.app.state.services.auth
    if auth is None:
        raise Problem("unavailable", "authentication is not configured")
    if credentials is None:
        raise HTTPException(
            401, "a bearer access token is required", {"WWW-Authenticate": "Bearer"}
        )
    if auth.reads_inline:
        grant: Grant = auth.authenticate(credentials.credentials)
        return grant
    return await run_in_threadpool(auth.authenticate, credentials.credentials)


GrantDep = Annotated[Grant, Depends(current_grant)]


async def current_actor(grant: GrantDep) -> Actor:
    """Who is calling (401 when nobody valid is)."""
    return grant.actor


ActorDep = Annotated[Actor, Depends(current_actor)]


def require(*roles: Role) -> Callable[[Grant], Coroutine[Any, Any, Actor]]:
    """A dependency: the actor if their role is one of ``roles``, else 403 problem+json."""
    if not roles:
        raise ValueError("require() needs at least one role")
    allowed = frozenset(roles)
    names = ", ".join(sorted(r.value for r in allowed))

    async def dependency(grant: GrantDep) -> Actor:  # one level less than through ActorDep
        actor = grant.actor
        if actor.role not in allowed:
            raise Problem("forbidden", f"this needs one of the roles: {names}")
        return actor

    return dependency


def client_address(request: Request) -> str:
    """The peer address. Behind a reverse proxy this is the proxy: run uvicorn with
    --proxy-headers and --forwarded-allow-ips so that it becomes the real client."""
    return request.client.host if request.client else "unknown"


def throttle(action: str) -> Callable[[Request, AuthService], None]:
    """A dependency that throttles an unauthenticated ``action`` per client address (the
    public join form: it answers whether an ID number already holds a membership, so it must
    not be an enumeration oracle)."""

    def dependency(request: Request, auth: AuthDep) -> None:
        auth.throttle(action, client_address(request))

    return dependency


OfficialDep = Annotated[Actor, Depends(require(Role.OFFICIAL))]
AuditorOrOfficialDep = Annotated[Actor, Depends(require(Role.AUDITOR, Role.OFFICIAL))]
MemberDep = Annotated[Actor, Depends(require(Role.MEMBER))]
StationDep = Annotated[Actor, Depends(require(Role.STATION))]
AccountHolderDep = Annotated[Actor, Depends(require(Role.OFFICIAL, Role.AUDITOR))]
