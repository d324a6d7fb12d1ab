"""``unionledger station ...``: a station device on the command line (docs/station.md,
"Command line"), for stations without a browser and for tests.

- ``provision``: log in with the device key, fetch ``/v1/stations/{id}/provision``, verify it
  against the pinned root key(s) and keep it, with the queue, in a station directory;
- ``verify``: check a scanned QR presentation offline with the cached lists;
- ``redeem``: online (``POST /v1/redemptions``) when the server answers, else offline: judged
  with the cache and the queue's counters, signed and queued (pending);
- ``sync``: upload the pending records (batches of at most 1,000) and mark them;
- ``status``: pending records, last sync, the cache's staleness, today's offline counters;
- ``serve``: the station app, a page and a JSON API on 127.0.0.1 (:mod:`api.station_app`).

The station directory holds ``station.json`` (the server, the station, the device key file's
path, the pinned root keys, the provisioning answer and when it was fetched, the last sync)
and ``queue.sqlite3`` (:class:`verifier.station_queue.StationQueue`). The device key never
leaves its file. HTTP is the standard library's ``urllib``; everything offline is
``verifier.station`` and ``verifier.station_queue``.

Exit codes: 0 success (valid, redeemed online or queued, all synced); 1 refused (the verdict
or reason code is printed), or some records in conflict or refused at sync; 2 usage (also: the
directory is not provisioned); 4 device key file missing or damaged; 6 the cache is stale
(connect and run ``provision``); 7 the server cannot be reached.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import keys
from verifier.credential import verify_presentation
from verifier.errors import (
    CredentialError,
    StationCacheError,
    StationQueueError,
    StatusListError,
    StatusListStale,
)
from verifier.station import (
    STALE_CACHE,
    OfflineRemaining,
    Refusal,
    StationCache,
    StationInfo,
    china_day,
    offline_remaining,
)
from verifier.station_queue import QueuedRecord, StationQueue, Status

__all__ = [
    "EXIT_FAILED",
    "EXIT_KEYFILE",
    "EXIT_OK",
    "EXIT_STALE",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "add_station_commands",
    "redeem_text",
    "status_doc",
    "sync_dir",
    "verify_text",
]

EXIT_OK = 0
EXIT_FAILED = 1  # refused; conflicts or refusals at sync
EXIT_USAGE = 2
EXIT_KEYFILE = 4  # the device key file is missing or damaged (as for the keyring)
EXIT_STALE = 6  # the cache is stale: connect and provision again
EXIT_UNREACHABLE = 7  # the server cannot be reached

DIR_FORMAT = "unionledger-station-dir/1"
STATE_FILE = "station.json"
QUEUE_FILE = "queue.sqlite3"
BATCH = 1000
LOGIN_CONTEXT = b"unionledger-station-login/1\n"


def _device_clock() -> datetime:
    """The device's raw clock, whole seconds (tests move it by replacing this function)."""
    return datetime.now(UTC).replace(microsecond=0)


class CommandError(Exception):
    """A failure with its exit code; printed as one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = code


def _fail(code: int, message: str) -> int:
    print(f"unionledger: error: {message}", file=sys.stderr)
    return code


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d} yuan"


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    return keys.format_rfc3339(datetime.fromtimestamp(seconds, UTC))


# -- HTTP (standard library only) --------------------------------------------------------------


class Unreachable(Exception):
    """No answer from the server (refused connection, DNS, timeout, a gateway's 502-504)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def problem(self) -> str:
        """A problem+json answer in one line: ``<type slug>: <detail>`` (and its reason; for
        a ``validation-error``, each field and what is wrong with it instead of the detail)."""
        body = self.body if isinstance(self.body, dict) else {}
        slug = str(body.get("type") or f"http-{self.status}").rsplit("/", 1)[-1]
        detail = body.get("detail") or body.get("title") or f"HTTP {self.status}"
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            detail = "; ".join(
                f"{'.'.join(map(str, e.get('loc', [])[1:])) or 'request'}: {e.get('msg')}"
                for e in errors
                if isinstance(e, dict)
            )
        reason = body.get("reason")
        return f"{slug}: {detail}" + (f" (reason: {reason})" if reason else "")


class Server:
    def __init__(self, base: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CommandError(EXIT_USAGE, f"--server {base!r}: not an http(s):// URL")
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.token: str | None = None

    def request(self, method: str, path: str, body: object = None) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(  # noqa: S310  (the scheme is checked: http(s) only)
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return Answer(response.status, _json(response.read()))
        except urllib.error.HTTPError as e:
            with e:
                payload = e.read()
            if e.code in (502, 503, 504):
                raise Unreachable(f"{self.base}: HTTP {e.code}") from None
            return Answer(e.code, _json(payload))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"{self.base}: {reason}") from None

    def login(self, station: str, key: keys.PrivateKey) -> None:
        answer = self.request("POST", "/v1/auth/station/challenge", {"station_id": station})
        if not answer.ok:
            raise CommandError(EXIT_FAILED, f"station login: {answer.problem()}")
        challenge = str(answer.body["challenge"])
        signature = key.sign(LOGIN_CONTEXT + f"{station}\n{challenge}".encode())
        answer = self.request(
            "POST",
            "/v1/auth/station/verify",
            {
                "station_id": station,
                "challenge": challenge,
                "signature": keys.b64url_encode(signature),
            },
        )
        if not answer.ok:
            raise CommandError(EXIT_FAILED, f"station login: {answer.problem()}")
        self.token = str(answer.body["access_token"])


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload) if payload else None
    except ValueError:
        return None


# -- the station directory -----------------------------------------------------------------------


def _load_key(path: str | os.PathLike[str]) -> keys.PrivateKey:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise CommandError(EXIT_KEYFILE, f"device key {path}: no such file") from None
    except OSError as e:
        reason = e.strerror or "cannot be read"
        raise CommandError(EXIT_KEYFILE, f"device key {path}: {reason}") from None
    except UnicodeDecodeError:
        raise CommandError(EXIT_KEYFILE, f"device key {path}: not text (a hex seed)") from None
    try:
        seed = bytes.fromhex(text)
        if len(seed) != 32:
            raise ValueError("not 32 bytes")
        return keys.PrivateKey.from_seed(seed)
    except (ValueError, keys.KeysError) as e:
        raise CommandError(
            EXIT_KEYFILE, f"device key {path}: not an Ed25519 seed in hex ({e})"
        ) from None


def _load_roots(path: str) -> list[dict[str, Any]]:
    """One JWK or a JWKS (as ``keys export-public`` prints); keys of another role are left out."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        found = doc.get("keys", [doc]) if isinstance(doc, dict) else None
        if not isinstance(found, list):
            raise ValueError("neither a JWK nor a JWKS")
        roots = [k for k in found if isinstance(k, dict) and k.get("role", "root") == "root"]
        for jwk in roots:
            keys.PublicKey.from_jwk(jwk)
    except (OSError, ValueError, keys.KeysError) as e:
        raise CommandError(EXIT_USAGE, f"--root {path}: {e}") from None
    if not roots:
        raise CommandError(EXIT_USAGE, f"--root {path}: no root key in it")
    return [{k: v for k, v in jwk.items() if k in ("kty", "crv", "x")} for jwk in roots]


class StationDir:
    """``station.json`` and the queue of one station device."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.state_file = self.path / STATE_FILE

    def exists(self) -> bool:
        return self.state_file.exists()

    def state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CommandError(
                EXIT_USAGE,
                f"{self.path} is not a provisioned station directory: run"
                " `unionledger station provision` first",
            ) from None
        except (OSError, ValueError) as e:
            raise CommandError(EXIT_FAILED, f"{self.state_file}: {e}") from None
        if state.get("format") != DIR_FORMAT:
            raise CommandError(EXIT_FAILED, f"{self.state_file} is not a {DIR_FORMAT} file")
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.state_file)

    @contextmanager
    def queue(self, station: str, key: keys.PrivateKey) -> Iterator[StationQueue]:
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            queue = StationQueue(self.path / QUEUE_FILE, station_id=station, kid=key.key_id)
        except StationQueueError as e:
            raise CommandError(EXIT_FAILED, e.diagnostics()) from None
        try:
            yield queue
        finally:
            queue.close()


def _cache(state: Mapping[str, Any]) -> StationCache:
    """The cache as provisioned: verified again at its fetch time (the file is local)."""
    answer = state["provision"]
    info = answer["station"]
    try:
        return StationCache.provision(
            station=StationInfo(info["station_id"], info["kind"], info.get("daily_ceiling")),
            trust_list=answer["trust_list"],
            roots=[keys.PublicKey.from_jwk(jwk) for jwk in state["roots"]],
            status_lists=answer["status_lists"],
            programs=answer["programs"],
            now=datetime.fromtimestamp(int(state["fetched_at"]), UTC),
        )
    except (keys.KeysError, StatusListError, StationCacheError, KeyError, TypeError) as e:
        raise CommandError(
            EXIT_FAILED, f"the cached provisioning does not verify ({e}): provision again"
        ) from None


def _text(value: str) -> str:
    text = sys.stdin.read() if value == "-" else value
    text = text.strip()
    if not text:
        raise CommandError(EXIT_USAGE, "no presentation text")
    return text


# -- commands --------------------------------------------------------------------------------------


def cmd_provision(args: argparse.Namespace) -> int:
    place = StationDir(args.dir)
    previous = place.state() if place.exists() else None
    if args.root is not None:
        roots = _load_roots(args.root)
    elif previous is not None:
        roots = previous["roots"]
    else:
        raise CommandError(EXIT_USAGE, "--root is required at the first provisioning")
    if previous is not None and previous["station"] != args.station:
        raise CommandError(
            EXIT_USAGE, f"{args.dir} is the directory of station {previous['station']}"
        )
    key = _load_key(args.device_key)
    server = Server(args.server, args.timeout)
    server.login(args.station, key)
    answer = server.request("GET", f"/v1/stations/{urllib.parse.quote(args.station)}/provision")
    if not answer.ok:
        raise CommandError(EXIT_FAILED, f"provision: {answer.problem()}")
    clock = _device_clock()
    state: dict[str, Any] = {
        "format": DIR_FORMAT,
        "server": server.base,
        "station": args.station,
        "device_key": str(Path(args.device_key).resolve()),
        "kid": key.key_id,
        "roots": roots,
        "provision": answer.body,
        "fetched_at": 0,
        "last_sync": previous.get("last_sync") if previous else None,
    }
    with place.queue(args.station, key) as queue:
        queue.set_clock_offset(datetime.fromtimestamp(int(answer.body["server_time"]), UTC), clock)
        now = queue.station_time(clock)
        state["fetched_at"] = int(now.timestamp())
        cache = _cache(state)  # verifies what was fetched before anything is kept
        head = queue.head()
        place.save(state)
    print(f"provisioned station {args.station} ({cache.station.kind}) from {server.base}")
    print(f"  device key {key.key_id}; directory {place.path}")
    print(f"  {len(cache.trust_list.keyring)} keys in the trust list")
    unions = ", ".join(sorted(cache.status_lists)) or "none"
    print(f"  status lists of unions: {unions}")
    for policy in cache.programs.values():
        if policy.allowed:
            print(
                f"  program {policy.program} v{policy.version}: offline up to"
                f" {policy.member_daily_limit} per member per day,"
                f" {_yuan(policy.station_daily_value)} per day here"
            )
        else:
            print(f"  program {policy.program} v{policy.version}: online only")
    print(f"  worst case offline per day: {_yuan(cache.worst_case_daily_value())}")
    for item in cache.staleness(now).items:
        print(f"  {item.words}")
    for server_head in answer.body.get("heads", []):
        if server_head.get("kid") == key.key_id and int(server_head.get("seq", 0)) > head.seq:
            print(
                f"  WARNING: the server holds record {server_head['seq']} of this device, the"
                f" queue only {head.seq}: the queue was reset; new records will be refused",
                file=sys.stderr,
            )
    return EXIT_OK


# -- the operations, as callable functions (the CLI and the station app, api/station_app.py) ---


def verify_text(directory: str, text: str, *, program: str | None = None) -> dict[str, Any]:
    """Verify a presentation offline with the cached lists. ``valid``, ``exit`` (the CLI's exit
    code), and either the member's facts or ``code`` and ``message`` (why it is refused).

    A valid answer also has ``offline_remaining``: for each cached program redeemable offline
    (only ``program``, when given), what the member may still get today at this device under
    the offline limits (:class:`verifier.station.OfflineRemaining`, from the queue's
    counters); with ``program``, ``remaining`` (its units) and ``renews_at`` too."""
    state = StationDir(directory).state()
    cache = _cache(state)
    clock = _device_clock()
    key = _load_key(state["device_key"])
    with StationDir(directory).queue(state["station"], key) as queue:
        now = queue.station_time(clock)
        result = _verify(cache, text, now)
        if result["valid"]:
            _add_remaining(result, queue, cache, now, program)
    return result


def _add_remaining(
    result: dict[str, Any],
    queue: StationQueue,
    cache: StationCache,
    now: datetime,
    program: str | None,
) -> None:
    day = china_day(now)
    left: dict[str, dict[str, Any]] = {}
    for policy in cache.programs.values():
        if not policy.allowed or program not in (None, policy.program):
            continue
        counters = queue.counters(result["member"], policy.program, day, result["presentation"])
        left[policy.program] = offline_remaining(
            policy, counters, station=cache.station, now=now
        ).to_json()
    result["offline_remaining"] = left
    if program is not None and program in left:
        result["remaining"] = left[program]["units"]
        result["renews_at"] = left[program]["renews_at"]


def _verify(cache: StationCache, text: str, now: datetime) -> dict[str, Any]:
    trust = cache.trust_list_item(now)
    if trust.stale:
        return _refused(EXIT_STALE, STALE_CACHE, trust.words)
    try:
        verified = verify_presentation(
            text,
            trust_list=cache.trust_list,
            status_lists=cache.fresh_status_lists(now),
            now=now,
            leeway=cache.leeway,
            max_proof_age=cache.max_proof_age,
            status_max_age=cache.max_ages.status_list,
        )
    except StatusListStale as e:
        message = f"{e}: this station's copy is missing or stale ({e.code})"
        return _refused(EXIT_STALE, STALE_CACHE, message)
    except CredentialError as e:
        return _refused(EXIT_FAILED, e.code, f"{e}", step=e.step)
    return {
        "valid": True,
        "exit": EXIT_OK,
        "member": verified.member_id,
        "home_union": verified.home_union,
        "issuer_union": verified.issuer_union,
        "groups": sorted(verified.groups),
        "expires_at": keys.format_rfc3339(verified.expires_at),
        "presentation": keys.b64url_encode(verified.presentation_hash),
    }


def _refused(exit_code: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"valid": False, "exit": exit_code, "code": code, "message": message, **extra}


def _redeem_online(session: Session, text: str, *, program: str, quantity: int) -> dict[str, Any]:
    def redeem(server: Server) -> dict[str, Any]:
        answer = server.request(
            "POST",
            "/v1/redemptions",
            {
                "presentation": text,
                "program": program,
                "quantity": quantity,
                "idempotency_key": str(uuid.uuid4()),
            },
        )
        if not answer.ok:
            return {"redeemed": False, "valid": False, **_refusal(answer), "mode": "online"}
        return _redeemed_online(answer.body)

    return session.call(redeem)


def _redeemed_online(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "redeemed": True,
        "exit": EXIT_OK,
        "mode": "online",
        "redemption": r["redemption"],
        "program": r["program"],
        "program_name": r["program_name"],
        "version": r["version"],
        "quantity": r["quantity"],
        "value": int(r["value"]),
        "member": r["member_id"],
        "remaining": r.get("remaining"),
        "renews_at": r.get("renews_at"),
    }


def _redeem_offline(
    directory: str,
    state: Mapping[str, Any],
    key: keys.PrivateKey,
    text: str,
    *,
    program: str,
    quantity: int,
) -> dict[str, Any]:
    cache = _cache(state)
    clock = _device_clock()
    with StationDir(directory).queue(state["station"], key) as queue:
        now = queue.station_time(clock)
        result = queue.scan(
            text,
            program=program,
            quantity=quantity,
            cache=cache,
            now=now,
            key=key,
            clock=clock,
        )
        pending = queue.summary()["pending"]
    if isinstance(result, Refusal):
        exit_code = EXIT_STALE if result.code == STALE_CACHE else EXIT_FAILED
        extra = {str(k): v for k, v in result.extra.items()}
        return {
            **_refused(exit_code, result.code, result.message, extra=extra),
            "mode": "offline",
            "pending": pending,
        }
    return {
        "redeemed": True,
        "exit": EXIT_OK,
        "mode": "offline",
        "seq": result.seq,
        "program": result.program,
        "quantity": result.quantity,
        "value": result.value,
        "member": result.member,
        "pending": pending,
        **_remaining_doc(result.remaining),
    }


def _remaining_doc(remaining: OfflineRemaining | None) -> dict[str, Any]:
    """An offline redemption's ``remaining`` (units the member may still get today at this
    device), ``renews_at`` and ``offline_remaining`` (all of :class:`OfflineRemaining`)."""
    if remaining is None:
        return {}
    return {
        "remaining": remaining.units,
        "renews_at": remaining.renews_at,
        "offline_remaining": remaining.to_json(),
    }


def redeem_text(
    directory: str,
    text: str,
    *,
    program: str,
    quantity: int = 1,
    mode: str = "auto",
    timeout: float = 10.0,
    session: Session | None = None,
) -> dict[str, Any]:
    """Redeem online, or offline when ``mode`` is ``offline`` or (``auto``) the server cannot
    be reached (``unreachable`` then says why). Raises :class:`Unreachable` in ``online`` mode.
    Online, through ``session`` (its kept login) or a new one."""
    if not 1 <= quantity <= 1000:
        raise CommandError(EXIT_USAGE, "--quantity must be from 1 to 1000")
    if mode not in ("auto", "online", "offline"):
        raise CommandError(EXIT_USAGE, f"mode {mode!r}: auto, online or offline")
    state = StationDir(directory).state()
    key = _load_key(state["device_key"])
    unreachable: str | None = None
    if mode != "offline":
        try:
            return _redeem_online(
                session or Session(directory, timeout), text, program=program, quantity=quantity
            )
        except Unreachable as e:
            if mode == "online":
                raise
            unreachable = str(e)
    result = _redeem_offline(directory, state, key, text, program=program, quantity=quantity)
    result.setdefault("redeemed", False)
    if unreachable is not None:
        result["unreachable"] = unreachable
    return result


_MARKS: dict[str, Status] = {
    "accepted": "synced",
    "duplicate": "synced",
    "conflict": "conflict",
    "refused": "refused",
}


def sync_dir(directory: str, *, batch_size: int = BATCH, timeout: float = 10.0) -> dict[str, Any]:
    """Upload the pending records: ``sent``, ``counts`` by answer, ``pending`` left,
    ``problems`` (one line per conflict or refusal) and ``exit``."""
    place = StationDir(directory)
    state = place.state()
    key = _load_key(state["device_key"])
    counts = dict.fromkeys(("accepted", "duplicate", "conflict", "refused"), 0)
    problems: list[str] = []
    sent = 0
    with place.queue(state["station"], key) as queue:
        server: Server | None = None
        while True:
            batch: list[QueuedRecord] = queue.pending()[:batch_size]
            if not batch:
                break
            if server is None:
                server = Server(state["server"], timeout)
                server.login(state["station"], key)
            station = urllib.parse.quote(state["station"])
            answer = server.request(
                "POST", f"/v1/stations/{station}/sync", {"records": [r.token for r in batch]}
            )
            if not answer.ok:
                raise CommandError(EXIT_FAILED, f"sync: {answer.problem()}")
            queue.set_clock_offset(
                datetime.fromtimestamp(int(answer.body["server_time"]), UTC), _device_clock()
            )
            sent += len(batch)
            marks: dict[int, tuple[Status, str | None]] = {}
            for item in answer.body["items"]:
                record = batch[int(item["index"])]
                status, reason = str(item["status"]), item.get("reason")
                if status == "refused" and reason == "not-judged":
                    continue  # stays pending: resent once the chain is mended
                if status not in _MARKS:
                    raise CommandError(EXIT_FAILED, f"sync: unknown answer {status!r}")
                counts[status] += 1
                marks[record.seq] = (_MARKS[status], reason)
                if status in ("conflict", "refused"):
                    problems.append(f"  record {record.seq}: {status}: {reason}")
            queue.mark_many(marks)
            if not marks:
                break  # nothing moved: resending would get the same answer
        queue.purge_replay(queue.station_time(_device_clock()))
        left = queue.summary()["pending"]
    if server is not None:
        state["last_sync"] = int(_device_clock().timestamp())
        place.save(state)
    return {
        "sent": sent,
        "counts": counts,
        "pending": left,
        "problems": problems,
        "exit": EXIT_FAILED if problems or left else EXIT_OK,
    }


# -- the station's own redemptions, and reversing one (docs/station.md section 11) ------------

LIST_LIMIT = 20


def logged_in(directory: str, timeout: float) -> Server:
    """The server of ``directory``, logged in as its station with its device key."""
    state = StationDir(directory).state()
    server = Server(state["server"], timeout)
    server.login(state["station"], _load_key(state["device_key"]))
    return server


class Session:
    """The station's login, kept while its access token lasts: station logins are limited per
    client address (docs/auth.md section 4: 20 attempts a minute, a login being two), so the
    station app logs in once, not once per redemption. A command of the command line makes
    one per run. Not thread-safe: the station app calls it under its lock."""

    def __init__(self, directory: str, timeout: float) -> None:
        self.directory = directory
        self.timeout = timeout
        self.server: Server | None = None

    def call(self, request: Callable[[Server], dict[str, Any]]) -> dict[str, Any]:
        """``request`` with the server logged in; logged in again, and ``request`` made again,
        once when the server answers 401 (the token expired): ``request`` must then return
        the answer's ``status``, as :func:`_refusal` does.

        Raises:
            Unreachable, CommandError (the login refused).
        """
        if self.server is None:
            self.server = logged_in(self.directory, self.timeout)
        result = request(self.server)
        if result.get("status") == HTTPStatus.UNAUTHORIZED:
            self.server = logged_in(self.directory, self.timeout)
            result = request(self.server)
        return result


def _refusal(answer: Answer) -> dict[str, Any]:
    body = answer.body if isinstance(answer.body, dict) else {}
    slug = str(body.get("type") or f"http-{answer.status}").rsplit("/", 1)[-1]
    return {
        "exit": EXIT_FAILED,
        "status": answer.status,
        "code": str(body.get("reason") or slug),
        "message": answer.problem(),
    }


def list_redemptions(
    server: Server, *, before: int | None = None, limit: int = LIST_LIMIT
) -> dict[str, Any]:
    """The station's own redemptions, newest first (``GET /v1/redemptions``): ``items``
    (without their receipts) and ``next`` (the ``before`` of the next, older, page), or a
    refusal (``code`` and ``message``)."""
    params = {"limit": str(limit)}
    if before is not None:
        params["before"] = str(before)
    answer = server.request("GET", "/v1/redemptions?" + urllib.parse.urlencode(params))
    if not answer.ok:
        return _refusal(answer)
    items = [{k: v for k, v in item.items() if k != "receipt"} for item in answer.body["items"]]
    return {"exit": EXIT_OK, "items": items, "next": answer.body["next"]}


def reverse_redemption(server: Server, redemption: int, reason: str | None) -> dict[str, Any]:
    """Reverse one of the station's redemptions (within the window: after it only an official
    may): ``reversed`` and the reversal's entry, or a refusal (``code`` and ``message``)."""
    answer = server.request(
        "POST", f"/v1/redemptions/{int(redemption)}/reverse", {"reason": reason}
    )
    if not answer.ok:
        return {"reversed": False, **_refusal(answer)}
    return {"reversed": True, "exit": EXIT_OK, "redemption": int(redemption), **answer.body}


def status_doc(directory: str) -> dict[str, Any]:
    """What ``station status --json`` prints, and the cached programs (``programs``)."""
    state = StationDir(directory).state()
    cache = _cache(state)
    key = _load_key(state["device_key"])
    clock = _device_clock()
    with StationDir(directory).queue(state["station"], key) as queue:
        now = queue.station_time(clock)
        summary = queue.summary()
        day = china_day(now)
        totals = queue.day_totals(day)
        today = [r for r in queue.records() if r.day == day]
        offset = int(queue.clock_offset.total_seconds())
        head = queue.head()
    report = cache.staleness(now)
    return {
        "station": state["station"],
        "server": state["server"],
        "kid": key.key_id,
        "now": keys.format_rfc3339(now),
        "clock_offset": offset,
        "records": summary,
        "pending": summary["pending"],
        "last_record": head.seq,
        "last_sync": _when(state.get("last_sync")) if state.get("last_sync") else None,
        "provisioned": _when(int(state["fetched_at"])),
        "stale": not report.ok,
        "cache": [
            {
                "item": item.name,
                "stale": item.stale,
                "fetched_at": keys.format_rfc3339(item.fetched_at),
                "good_until": keys.format_rfc3339(item.good_until),
                "words": item.words,
            }
            for item in report.items
        ],
        "today": {
            "day": day,
            "records": len(today),
            "units": sum(r.quantity for r in today),
            "value": totals[""],
            "programs": {p: v for p, v in totals.items() if p},
        },
        "programs": [
            {
                "program": policy.program,
                "version": policy.version,
                "name": policy.name,
                "offline": policy.allowed,
                "per_member_per_day": policy.per_member_per_day,
            }
            for policy in cache.programs.values()
        ],
    }


# -- commands (print what the functions above return) ----------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    StationDir(args.dir).state()  # "not provisioned" before "no presentation text"
    result = verify_text(args.dir, _text(args.text), program=args.program)
    if not result["valid"]:
        step = f" (check {result['step']})" if result.get("step") else ""
        print(f"refused: {result['code']}{step}: {result['message']}")
        return int(result["exit"])
    groups = ", ".join(result["groups"]) or "none disclosed"
    print(f"valid: member {result['member']}")
    print(f"  home union {result['home_union']}, issued by union {result['issuer_union']}")
    print(f"  groups: {groups}")
    print(f"  credential expires {result['expires_at']}")
    for program, left in result["offline_remaining"].items():
        print(f"  {program}: {_left_words(left)}")
    if args.program is not None and args.program not in result["offline_remaining"]:
        print(f"  {args.program}: not redeemable offline at this station")
    return EXIT_OK


def _left_words(left: Mapping[str, Any]) -> str:
    """An :class:`OfflineRemaining` document in words, for the counter's screen."""
    words = (
        f"offline quota left today at this station: {left['units']} of {left['limit']},"
        f" {_yuan(left['program_value'])} of the program's daily value"
    )
    if left.get("station_value") is not None:
        words += f", {_yuan(left['station_value'])} of the station's"
    return words + f" (renews {left['renews_at']})"


def cmd_redeem(args: argparse.Namespace) -> int:
    if not 1 <= args.quantity <= 1000:
        raise CommandError(EXIT_USAGE, "--quantity must be from 1 to 1000")
    StationDir(args.dir).state()
    text = _text(args.text)
    r = redeem_text(
        args.dir,
        text,
        program=args.program,
        quantity=args.quantity,
        mode=args.mode,
        timeout=args.timeout,
    )
    if r.get("unreachable"):
        print(f"server unreachable ({r['unreachable']}): redeeming offline", file=sys.stderr)
    if not r.get("redeemed"):
        if r["mode"] == "online":
            print(f"refused: {r['message']}")
        else:
            extra = ", ".join(f"{k} {v}" for k, v in r.get("extra", {}).items())
            print(f"refused: {r['code']}: {r['message']}" + (f" ({extra})" if extra else ""))
        return int(r["exit"])
    if r["mode"] == "online":
        print(
            f"redeemed online: redemption {r['redemption']}, {r['program_name']} ({r['program']}"
            f" v{r['version']}), quantity {r['quantity']}, {_yuan(r['value'])},"
            f" member {r['member']}"
        )
        if r.get("remaining") is not None:
            renews = f", renews {r['renews_at']}" if r.get("renews_at") else ""
            print(f"  quota left: {r['remaining']}{renews}")
        return EXIT_OK
    print(
        f"redeemed offline (pending sync): record {r['seq']}, {r['program']},"
        f" quantity {r['quantity']}, {_yuan(r['value'])}, member {r['member']}"
    )
    if r.get("offline_remaining") is not None:
        print(f"  {_left_words(r['offline_remaining'])}")
    print(f"  {r['pending']} record(s) pending")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    r = sync_dir(args.dir, batch_size=args.batch, timeout=args.timeout)
    counts = r["counts"]
    print(
        f"synced {r['sent']} record(s): {counts['accepted']} accepted, {counts['duplicate']}"
        f" duplicate, {counts['conflict']} conflict, {counts['refused']} refused;"
        f" {r['pending']} pending"
    )
    for line in r["problems"]:
        print(line)
    return int(r["exit"])


def cmd_status(args: argparse.Namespace) -> int:
    doc = status_doc(args.dir)
    programs = doc.pop("programs")
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return EXIT_OK
    del programs
    summary = doc["records"]
    offset = doc["clock_offset"]
    print(f"station {doc['station']} (device key {doc['kid']}), server {doc['server']}")
    print(
        f"records: {summary['pending']} pending, {summary['synced']} synced,"
        f" {summary['conflict']} conflict, {summary['refused']} refused"
    )
    print(f"last sync: {doc['last_sync'] or 'never'}; provisioned {doc['provisioned']}")
    print(f"clock: {doc['now']} (device clock {offset:+d} s from the server's)")
    print("cache: " + ("STALE: connect and run `station provision`" if doc["stale"] else "fresh"))
    for item in doc["cache"]:
        print(f"  {item['words']}")
    today = doc["today"]
    by_program = ", ".join(f"{p} {_yuan(v)}" for p, v in today["programs"].items())
    print(
        f"today ({today['day']}, China time) offline: {today['records']} record(s),"
        f" {today['units']} unit(s), {_yuan(today['value'])}"
        + (f" ({by_program})" if by_program else "")
    )
    return EXIT_OK


def cmd_redemptions(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 100:
        raise CommandError(EXIT_USAGE, "--limit must be from 1 to 100")
    r = list_redemptions(logged_in(args.dir, args.timeout), before=args.before, limit=args.limit)
    if args.json:
        print(json.dumps(r, indent=2, ensure_ascii=False))
        return int(r["exit"])
    if "items" not in r:
        print(f"refused: {r['message']}")
        return int(r["exit"])
    for item in r["items"]:
        state = (
            f"reversed {item['reversed_at']}"
            if item["reversed_at"]
            else ("reversible" if item["can_reverse"] else "ask an official to reverse")
        )
        print(
            f"{item['redemption']}  {item['at']}  {item['program_name']} ({item['program']})"
            f"  x{item['quantity']}  {_yuan(item['value'])}  member {item['member_id']}  {state}"
        )
    if not r["items"]:
        print("no redemptions")
    if r["next"] is not None:
        print(f"older: --before {r['next']}")
    return EXIT_OK


def cmd_reverse(args: argparse.Namespace) -> int:
    reason = args.reason.strip() if args.reason else None
    r = reverse_redemption(logged_in(args.dir, args.timeout), args.redemption, reason or None)
    if r["reversed"]:
        print(f"reversed redemption {args.redemption}: entry {r.get('index')}")
    else:
        print(f"refused: {r['message']}")
    return int(r["exit"])


def cmd_serve(args: argparse.Namespace) -> int:
    from api.station_app import serve  # noqa: PLC0415  (only this command needs it)

    return serve(args.dir, args.port, args.timeout)


# -- the parser ------------------------------------------------------------------------------------


def _batch(value: str) -> int:
    n = int(value)
    if not 1 <= n <= BATCH:
        raise argparse.ArgumentTypeError(f"from 1 to {BATCH}")
    return n


def _run(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CommandError as e:
            return _fail(e.exit_code, str(e))
        except Unreachable as e:
            return _fail(EXIT_UNREACHABLE, f"server unreachable: {e}")
        except StationQueueError as e:
            return _fail(EXIT_FAILED, e.diagnostics())
        except sqlite3.Error as e:
            return _fail(EXIT_FAILED, f"the queue: {type(e).__name__}: {e}")

    return wrapped


def add_station_commands(station_cmd: argparse.ArgumentParser) -> None:
    station_cmd.description = (
        "A station device without a browser. Exit status: 0 success; 1 refused (or conflicts"
        " and refusals at sync); 2 usage; 4 device key file missing or damaged; 6 the cache"
        " is stale; 7 the server cannot be reached."
    )
    ssub = station_cmd.add_subparsers(dest="station_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, *, network: bool = False) -> None:
        p.add_argument("--dir", required=True, help="the station directory (cache and queue)")
        if network:
            p.add_argument(
                "--timeout", type=float, default=10.0, help="HTTP timeout, seconds (default 10)"
            )

    k = ssub.add_parser(
        "provision",
        help="log in with the device key and cache what offline redemption needs",
    )
    common(k, network=True)
    k.add_argument("--server", required=True, help="the server's URL, http(s)://...")
    k.add_argument("--station", required=True, help="the station id")
    k.add_argument(
        "--device-key", required=True, metavar="FILE", help="the device's Ed25519 seed, in hex"
    )
    k.add_argument(
        "--root",
        metavar="FILE",
        help="the pinned root public key: a JWK or a JWKS (`keys export-public`), obtained out"
        " of band; required the first time, kept afterwards",
    )
    k.set_defaults(func=_run(cmd_provision))

    k = ssub.add_parser(
        "verify",
        help="verify a scanned presentation offline (0 valid, 1 refused, 6 stale cache)",
    )
    common(k)
    k.add_argument(
        "--program",
        help="show only this program's offline quota left for the member (default: every"
        " program redeemable offline here)",
    )
    k.add_argument("text", metavar="TEXT", help="the QR text, or - to read it from stdin")
    k.set_defaults(func=_run(cmd_verify))

    k = ssub.add_parser(
        "redeem",
        help="redeem online, or offline when forced or the server cannot be reached",
    )
    common(k, network=True)
    k.add_argument("--program", required=True)
    k.add_argument("--quantity", type=int, default=1)
    mode = k.add_mutually_exclusive_group()
    mode.add_argument("--online", dest="mode", action="store_const", const="online")
    mode.add_argument("--offline", dest="mode", action="store_const", const="offline")
    k.add_argument("text", metavar="TEXT", help="the QR text, or - to read it from stdin")
    k.set_defaults(func=_run(cmd_redeem), mode="auto")

    k = ssub.add_parser("sync", help="upload the pending offline records")
    common(k, network=True)
    k.add_argument(
        "--batch", type=_batch, default=BATCH, metavar="N", help="records per request (≤ 1000)"
    )
    k.set_defaults(func=_run(cmd_sync))

    k = ssub.add_parser("status", help="pending records, last sync, cache ages, today's counters")
    common(k)
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=_run(cmd_status))

    k = ssub.add_parser("redemptions", help="this station's redemptions, newest first")
    common(k, network=True)
    k.add_argument("--before", type=int, metavar="ID", help="older than this redemption")
    k.add_argument("--limit", type=int, default=LIST_LIMIT, help="how many (1 to 100)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=_run(cmd_redemptions))

    k = ssub.add_parser(
        "reverse",
        help="reverse one of this station's redemptions, within the reversal window",
    )
    common(k, network=True)
    k.add_argument("redemption", type=int, metavar="ID", help="the redemption's number")
    k.add_argument("--reason", help="why (kept on the ledger)")
    k.set_defaults(func=_run(cmd_reverse))

    k = ssub.add_parser(
        "serve",
        help="the station app: its page and a small JSON API on 127.0.0.1 (docs/station.md)",
    )
    common(k, network=True)
    k.add_argument("--port", type=int, default=8765, help="the local port (default 8765)")
    k.set_defaults(func=_run(cmd_serve))
