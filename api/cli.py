"""The ``unionledger`` command line.

Exit codes scripts can rely on (also in README.md and docs/keys.md):
0 success; 1 a checked failure (e.g. unknown key id); 2 usage error; 3 wrong passphrase;
4 key file missing or damaged; 5 unusable settings. Errors print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import keys
from api.settings import ConfigError, Settings, package_version
from api.station_cli import add_station_commands as _add_station_commands
from api.stats_cli import add_stats_commands as _add_stats_commands

if TYPE_CHECKING:
    from ledger.sequencer import Tx

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PASSPHRASE, EXIT_KEYFILE, EXIT_CONFIG = range(6)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(
        data_dir=args.data_dir,
        demo=getattr(args, "demo", False),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def _out(text: str, path: str | None) -> None:
    if path:
        Path(path).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    else:
        print(text)


# -- commands ------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415  (only this command needs the server)

    from api.app import create_app, server_app  # noqa: PLC0415
    from api.bootstrap import init_data_dir  # noqa: PLC0415

    settings = _settings(args)
    if settings.demo:
        init_data_dir(settings, keys.utc_now())
    app = create_app(settings)
    if settings.demo:
        from api import demo  # noqa: PLC0415

        services = app.state.services
        summary = demo.seed(services.engine, services.sequencer, services.members, services.keyring)
        from api.bootstrap import demo_station_key_file  # noqa: PLC0415

        print(demo.banner(summary, demo_station_key_file(settings)), flush=True)
    print(f"UnionLedger serving on http://{settings.host}:{settings.port}", flush=True)
    print(f"  data directory: {settings.data_dir}", flush=True)
    print(f"  database:       {app.state.services.engine.url.render_as_string()}", flush=True)
    print(f"  API docs:       http://{settings.host}:{settings.port}/docs", flush=True)
    uvicorn.run(
        server_app(app),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=settings.access_log,
    )
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from api.bootstrap import (  # noqa: PLC0415
        init_data_dir,
        ledger_writer,
        load_provinces,
        seed_tree,
        shared_data_dir,
    )
    from ledger.domain import DomainError  # noqa: PLC0415

    settings = _settings(args)
    provinces = []
    if args.provinces is not None:
        source = Path(args.provinces) if args.provinces else shared_data_dir() / "provinces.csv"
        try:
            provinces = load_provinces(source)
        except (KeyError, UnicodeDecodeError, csv.Error) as e:
            return _fail(EXIT_USAGE, f"{source}: not a provinces file (code,name_zh,...): {e}")
    ring = init_data_dir(settings, keys.utc_now())
    with ledger_writer(settings) as (_engine, sequencer):
        try:
            created = seed_tree(sequencer, provinces)
        except DomainError as e:
            return _fail(EXIT_USAGE, f"{e}: nothing created")
    print(f"initialised {settings.data_dir} ({len(ring)} keys)")
    if created:
        print(f"created unions: {', '.join(created)}")
    return EXIT_OK


def cmd_keys_init(args: argparse.Namespace) -> int:
    from api.bootstrap import init_keys  # noqa: PLC0415

    settings = _settings(args)
    store = keys.KeyStore(settings.data_dir)
    if store.exists():
        raise keys.KeyringExists(f"a keyring already exists at {store.path}")
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ring = init_keys(settings, keys.utc_now())
    print(f"created {store.path} with {len(ring)} keys")
    return EXIT_OK


def _listed(record: keys.KeyRecord, now: datetime) -> dict[str, object]:
    """A record for `keys list --json`: every member, ``null`` when unset."""
    optional = dict.fromkeys(("scope", "not_after", "revoked_at", "revocation_reason"))
    return {**optional, **record.to_dict(), "status": record.status_at(now)}


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ring = _with_chain(settings, keys.KeyStore(settings.data_dir).load_public())
    now = keys.utc_now()
    rows = sorted(ring, key=lambda r: (r.role.value, r.scope or "", r.not_before))
    if args.json:
        print(json.dumps([_listed(r, now) for r in rows], indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"{'KID':<44} {'ROLE':<8} {'SCOPE':<10} {'STATUS':<8} NOT BEFORE -> NOT AFTER")
    for r in rows:
        until = keys.format_rfc3339(r.not_after) if r.not_after else "-"
        print(
            f"{r.kid:<44} {r.role.value:<8} {r.scope or '-':<10} {r.status_at(now):<8} "
            f"{keys.format_rfc3339(r.not_before)} -> {until}"
        )
    return EXIT_OK


def _update(
    args: argparse.Namespace, change: Callable[[keys.Keyring], keys.Keyring]
) -> keys.Keyring:
    """Load, change and save the keyring under its lock; the saved keyring."""
    settings = _settings(args)
    store = keys.KeyStore(settings.data_dir)
    passphrase = settings.passphrase()
    with store.locked():
        # The change is made to the keys that stand: the file merged with the chain's facts
        # (keys.md 4.6), so that an older file cannot hide a pending key, a revocation or a
        # key it lacks; the saved file carries them from then on.
        ring = change(_with_chain(settings, store.load(passphrase)))
        store.save(ring, passphrase)
    if _has_ledger(settings):  # on the chain now, not at the server's next look (keys.md 4.6)
        from api.bootstrap import ledger_writer  # noqa: PLC0415

        try:
            with ledger_writer(settings):
                pass
        except keys.NoCurrentKey as e:  # e.g. the only log key was just revoked
            print(
                f"warning: saved in the keyring file, but the ledger cannot record it yet ({e}):"
                " run `unionledger keys rotate log` next (docs/keys.md section 3.4)",
                file=sys.stderr,
            )
    return ring


def _has_ledger(settings: Settings) -> bool:
    """Whether the data directory's database exists and holds the ledger's key facts."""
    from sqlalchemy import inspect  # noqa: PLC0415
    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from ledger.db import make_engine  # noqa: PLC0415

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        return False  # `keys init` made the keyring; nothing has opened the ledger yet
    engine = make_engine(settings.database_url)
    try:
        return inspect(engine).has_table("chain_keys")
    except SQLAlchemyError as e:
        raise ConfigError(f"cannot open the ledger's database: {type(e).__name__}") from e
    finally:
        engine.dispose()


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    role = keys.Role(args.role)
    lead = None if args.lead_days is None else timedelta(days=args.lead_days)
    created: list[keys.KeyRecord] = []

    from api.bootstrap import rotate_key  # noqa: PLC0415

    def change(ring: keys.Keyring) -> keys.Keyring:
        ring, record = rotate_key(ring, role, keys.utc_now(), scope=args.scope, lead_time=lead)
        created.append(record)
        return ring

    _update(args, change)
    record = created[0]
    print(f"{record.kid} {role.value} valid from {keys.format_rfc3339(record.not_before)}")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    at = keys.parse_rfc3339(args.at) if args.at else keys.utc_now()
    record = _update(args, lambda ring: ring.revoke(args.kid, at, args.reason)).record(args.kid)
    assert record.revoked_at is not None
    note = "" if record.revoked_at == at else " (an earlier revocation stands)"
    print(f"{args.kid} revoked from {keys.format_rfc3339(record.revoked_at)}{note}")
    return EXIT_OK


def cmd_keys_register(args: argparse.Namespace) -> int:
    doc = json.loads(Path(args.jwk).read_text(encoding="utf-8"))
    public = keys.PublicKey.from_jwk(doc)
    role = keys.Role(args.role)
    at = keys.parse_rfc3339(args.not_before) if args.not_before else keys.utc_now()
    ring = _update(args, lambda ring: ring.register(role, public, at, scope=args.scope)[0])
    record = ring.record(public.key_id)
    print(f"{record.kid} {role.value} {record.scope} valid from {keys.format_rfc3339(at)}")
    return EXIT_OK


def cmd_keys_reseal(args: argparse.Namespace) -> int:
    """Seal the key records as they stand (docs/keys.md section 4.5): for a keyring written
    before the seal existed, or after a deliberate edit by hand. Check them first."""
    settings = _settings(args)
    store = keys.KeyStore(settings.data_dir)
    passphrase = settings.passphrase()
    with store.locked():
        ring = _with_chain(settings, store.load(passphrase, accept_unsealed=True))
        store.save(ring, passphrase, accept_unsealed=True)
    print(f"sealed the {len(ring)} key records of {store.path}")
    return EXIT_OK


def cmd_keys_export_public(args: argparse.Namespace) -> int:
    from keys.trustlist import record_to_jwk  # noqa: PLC0415

    settings = _settings(args)
    ring = _with_chain(settings, keys.KeyStore(settings.data_dir).load_public())
    doc = {"keys": [record_to_jwk(r) for r in sorted(ring, key=lambda r: r.kid)]}
    _out(json.dumps(doc, indent=2), args.out)
    return EXIT_OK


def _with_chain(settings: Settings, ring: keys.Keyring) -> keys.Keyring:
    """``ring`` merged with the key facts of the data directory's ledger (docs/keys.md section
    4.6), read without writing; the file alone when there is no database yet."""
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from ledger.db import make_engine  # noqa: PLC0415
    from ledger.keyevents import KeyringConflict, chain_records, merge  # noqa: PLC0415

    if not _has_ledger(settings):
        return ring
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return merge(ring, chain_records(conn))
    except SQLAlchemyError as e:
        raise ConfigError(f"cannot read the ledger's key facts: {type(e).__name__}") from e
    except KeyringConflict as e:
        from api.bootstrap import keyring_conflict  # noqa: PLC0415

        raise keyring_conflict(e) from e
    finally:
        engine.dispose()


def cmd_keys_trust_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ring = _with_chain(settings, keys.KeyStore(settings.data_dir).load(settings.passphrase()))
    token = keys.sign_trust_list(ring, keys.utc_now(), ttl=timedelta(days=args.ttl_days))
    _out(token, args.out)
    return EXIT_OK


def cmd_keys_verify_trust_list(args: argparse.Namespace) -> int:
    token = Path(args.token_file).read_text(encoding="utf-8").strip()
    verified = keys.verify_trust_list(token, _root_keys(args.root), keys.utc_now())
    print(
        f"valid: signed by {verified.signed_by}, {len(verified.keyring)} keys, "
        f"expires {keys.format_rfc3339(verified.expires_at)}"
    )
    return EXIT_OK


def _progress(label: str) -> Callable[[int, int], None]:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""
    if not sys.stderr.isatty():
        return lambda done, total: None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def cmd_ledger_status(args: argparse.Namespace) -> int:
    from ledger.db import make_engine  # noqa: PLC0415
    from ledger.log import LogReader  # noqa: PLC0415

    engine = make_engine(_settings(args).database_url)
    try:
        reader = LogReader(engine)
        head = reader.head()
        latest = reader.latest_checkpoint()
    finally:
        engine.dispose()
    print(f"entries:    {head.size}")
    print(f"root:       {head.root.hex()}")
    print(f"last entry: {head.last_time or '-'}")
    print(f"checkpoint: {'none' if latest is None else f'size {latest.size}'}")
    return EXIT_OK


def cmd_ledger_export(args: argparse.Namespace) -> int:
    from ledger.db import make_engine  # noqa: PLC0415
    from ledger.log import MAX_ENTRIES_PER_READ, LogReader  # noqa: PLC0415
    from verifier.audit import write_export  # noqa: PLC0415

    engine = make_engine(_settings(args).database_url)
    try:
        reader = LogReader(engine)
        latest = reader.latest_checkpoint()
        if latest is None:
            return _fail(EXIT_FAILED, "the ledger has no signed checkpoint yet: nothing to export")
        show = _progress("export")

        def pages() -> Iterator[bytes]:
            for start in range(0, latest.size, MAX_ENTRIES_PER_READ):
                end = min(latest.size, start + MAX_ENTRIES_PER_READ)
                yield from reader.entries(start, end)
                show(end, latest.size)

        target = Path(args.out)
        tmp = target.with_name(target.name + ".partial")
        with tmp.open("wb") as out:
            count = write_export(out, latest.note, pages())
        tmp.replace(target)
    finally:
        engine.dispose()
    print(f"exported {count} entries and the checkpoint at size {latest.size} to {target}")
    return EXIT_OK


def cmd_ledger_rebuild(args: argparse.Namespace) -> int:
    from ledger.db import make_engine  # noqa: PLC0415
    from ledger.projections import default_projections, rebuild  # noqa: PLC0415

    engine = make_engine(_settings(args).database_url, writer=True)
    try:
        count = rebuild(engine, default_projections(), progress=_progress("rebuild"))
    finally:
        engine.dispose()
    print(f"rebuilt the projections from {count} entries")
    return EXIT_OK


def cmd_ledger_check(args: argparse.Namespace) -> int:
    from ledger.db import make_engine  # noqa: PLC0415
    from ledger.projections import compare, default_projections  # noqa: PLC0415

    engine = make_engine(_settings(args).database_url)
    try:
        differences = compare(engine, default_projections())
    finally:
        engine.dispose()
    if differences:
        for line in differences[:50]:
            print(line)
        return _fail(EXIT_FAILED, f"{len(differences)} differences between chain and tables")
    print("projections match a replay of the chain")
    return EXIT_OK


def _note_verifier(text: str) -> Any:
    from verifier.note import NoteVerifier  # noqa: PLC0415

    if Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8").strip()
    return NoteVerifier.from_key_string(text)


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    """Verify a receipt (a member's proof bundle) offline: exit 0 verified, 1 not, 2 usage."""
    from verifier.errors import NoteError, VerifierError  # noqa: PLC0415
    from verifier.receipt import Receipt, verify_entry_receipt  # noqa: PLC0415

    try:
        verifier = _note_verifier(args.public_key)
    except NoteError as e:
        return _fail(EXIT_USAGE, f"--public-key: {e}")
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return _fail(EXIT_USAGE, f"{args.file}: {type(e).__name__}")
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("receipt"), dict):
            text = json.dumps(doc["receipt"])  # a saved redemption answer: its receipt
        receipt = Receipt.from_json(text)
        entry, checkpoint = verify_entry_receipt(receipt, verifier, origin=args.origin)
    except (ValueError, VerifierError) as e:
        return _fail(EXIT_FAILED, f"not verified: {e}")
    print(
        f"verified: entry {entry.index} ({entry.type}, {entry.time}) is in the log "
        f"{checkpoint.origin} of {checkpoint.size} entries, root {checkpoint.root_hash.hex()}"
    )
    print(json.dumps(entry.body, ensure_ascii=False, sort_keys=True))
    return EXIT_OK


def _root_keys(path: str) -> list[keys.PublicKey]:
    """The pinned root public keys of a JWK or JWKS file (entries of another role ignored)."""
    root_doc = json.loads(Path(path).read_text(encoding="utf-8"))
    jwks = root_doc.get("keys", [root_doc]) if isinstance(root_doc, dict) else []
    return [keys.PublicKey.from_jwk(k) for k in jwks if k.get("role", "root") == "root"]


def _log_keys_of_trust_list(
    source: Any, roots: Sequence[keys.PublicKey], origin: str | None
) -> list[Any]:
    """The log keys valid now of the server's trust list, verified against the pinned root
    (docs/formats.md section 5, "Obtaining the log key"), as note verifiers named by the log's
    origin (``origin``, or the checkpoint's first line).

    Raises:
        AuditFailure: the trust list does not verify against the root.
    """
    from verifier.audit import AuditFailure  # noqa: PLC0415
    from verifier.note import NoteVerifier  # noqa: PLC0415

    now = keys.utc_now()
    try:
        trusted = keys.verify_trust_list(source.trust_list(), roots, now)
    except keys.KeysError as e:
        raise AuditFailure(f"the server's trust list: {e.diagnostics()}", None) from e
    name = origin or source.checkpoint().split("\n", 1)[0]
    return [
        NoteVerifier(name, r.public_key)
        for r in trusted.keyring.of_role(keys.Role.LOG)
        if r.is_valid_at(now)
    ]


def _signing_log_key(note: str, candidates: Sequence[Any]) -> Any:
    """The one of ``candidates`` that signed the checkpoint ``note``.

    Raises:
        AuditFailure: none did, or a signature of one of them fails.
    """
    from verifier.audit import AuditFailure  # noqa: PLC0415
    from verifier.errors import NoteError  # noqa: PLC0415
    from verifier.note import open_note  # noqa: PLC0415

    try:
        opened = open_note(note, list(candidates))
    except NoteError as e:
        raise AuditFailure(f"checkpoint signature check failed: {e}", None) from e
    for candidate in candidates:
        if opened.verified(candidate):
            return candidate
    raise AuditFailure("the checkpoint is signed by none of the log keys given", None)


class _UsageError(Exception):
    pass


def _audit_trust(args: argparse.Namespace) -> tuple[list[Any], list[keys.PublicKey]]:
    """`audit`'s trusted log keys (``--public-key``) and pinned roots (``--root``).

    Raises:
        _UsageError: neither given, one unreadable, or ``--root`` with an export file.
    """
    from verifier.errors import NoteError  # noqa: PLC0415

    try:
        candidates = [_note_verifier(k) for k in args.public_key or ()]
    except NoteError as e:
        raise _UsageError(f"--public-key: {e}") from e
    if not candidates and not args.root:
        raise _UsageError("give the log's key (--public-key) or a pinned root (--root)")
    if not args.root:
        return candidates, []
    if not args.source.startswith(("http://", "https://")):
        raise _UsageError("--root needs a server URL: an export file holds no trust list")
    try:
        roots = _root_keys(args.root)
    except (OSError, ValueError, keys.KeysError) as e:
        raise _UsageError(f"--root {args.root}: {e}") from e
    if not roots:
        raise _UsageError(f"--root {args.root}: no root key in it")
    return candidates, roots


def cmd_audit(args: argparse.Namespace) -> int:
    from verifier.audit import (  # noqa: PLC0415
        AuditFailure,
        AuditState,
        ExportSource,
        HttpSource,
        LogSource,
        SourceError,
        audit,
    )

    try:
        candidates, roots = _audit_trust(args)
    except _UsageError as e:
        return _fail(EXIT_USAGE, str(e))
    http = args.source.startswith(("http://", "https://"))
    state_path = Path(args.state) if args.state else None
    try:
        previous = (
            AuditState.from_json(state_path.read_text(encoding="utf-8"))
            if state_path and state_path.exists()
            else None
        )
        source: LogSource = HttpSource(args.source) if http else ExportSource(args.source)
        try:
            if args.root:
                assert isinstance(source, HttpSource)
                candidates += _log_keys_of_trust_list(source, roots, args.origin)
            verifier = _signing_log_key(source.checkpoint(), candidates)
            result = audit(
                source,
                verifier,
                origin=args.origin,
                previous=previous,
                progress=_progress("audit"),
            )
        finally:
            if isinstance(source, ExportSource):
                source.close()
    except AuditFailure as e:
        where = f" (first bad entry: {e.index})" if e.index is not None else ""
        print(f"FAILED{where}: {e.reason}")
        return EXIT_FAILED
    except SourceError as e:
        return _fail(EXIT_USAGE, str(e))
    if state_path:
        state_path.write_text(result.state.to_json() + "\n", encoding="utf-8")
    cp = result.checkpoint
    since = f", consistent with size {previous.size} seen before" if previous else ""
    print(
        f"verified: {result.entries} entries, root {cp.root_hash.hex()} "
        f"signed by {cp.origin}{since}"
    )
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------


def cmd_member_qr(args: argparse.Namespace) -> int:
    """A development wallet: the member's holder key and credential live in a wallet file
    (0600); the first run (or --renew) registers the key, as the member app does, and every run
    prints a fresh presentation and writes its QR PNG."""
    from api.bootstrap import ledger_writer  # noqa: PLC0415
    from ledger.credentials import Credentials  # noqa: PLC0415
    from ledger.domain import SYSTEM, DomainError, Invalid  # noqa: PLC0415
    from ledger.members import Members  # noqa: PLC0415
    from ledger.vault import Vault  # noqa: PLC0415
    from verifier.wallet import Wallet, qr_png, qr_version  # noqa: PLC0415

    settings = _settings(args)
    wallet_path = Path(args.wallet or settings.data_dir / f"wallet-{args.member_id}.json")
    saved = None
    if wallet_path.exists() and not args.renew:
        saved = json.loads(wallet_path.read_text(encoding="utf-8"))
        if saved.get("member_id") != args.member_id:
            return _fail(EXIT_USAGE, f"{wallet_path} is the wallet of another member")
    if saved is None:
        holder = keys.PrivateKey.generate()
        store = keys.KeyStore(settings.data_dir)
        keyring = store.load(settings.passphrase())
        members = Members(Vault.from_keyring(keyring), keyring.secret("member-pseudonym"))
        credentials = Credentials(keyring, members)
        with ledger_writer(settings) as (_engine, sequencer):
            try:
                issued = sequencer.execute(
                    lambda tx: credentials.issue(tx, SYSTEM, args.member_id, holder.public_key)
                )
            except Invalid as e:
                return _fail(EXIT_USAGE, str(e))
            except DomainError as e:
                return _fail(EXIT_FAILED, str(e))
        saved = {
            "member_id": args.member_id,
            "holder_seed": holder.seed().hex(),
            "credential": keys.b64url_encode(issued.token),
            "disclosures": {g: keys.b64url_encode(d) for g, d in issued.disclosures.items()},
            "exp": issued.row.expires_at,
        }
        fd = os.open(wallet_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(saved, f, indent=2)
    wallet = Wallet(
        keys.PrivateKey.from_seed(bytes.fromhex(saved["holder_seed"])),
        keys.b64url_decode(saved["credential"]),
        {g: keys.b64url_decode(d) for g, d in saved["disclosures"].items()},
    )
    unknown = set(args.disclose) - wallet.groups
    if unknown:
        return _fail(EXIT_USAGE, f"the credential holds no group {', '.join(sorted(unknown))}")
    disclose = list(args.disclose)
    if args.program is not None:
        from ledger import programs  # noqa: PLC0415
        from ledger.db import make_engine  # noqa: PLC0415

        engine = make_engine(settings.database_url)
        # The exact time, as the server judges: keys.utc_now() is cut to the second, so a
        # version made earlier in this same second would not be in force yet.
        exact = datetime.now(UTC)
        try:
            with engine.connect() as conn:
                version = programs.version_at(conn, args.program, programs.format_time(exact))
        finally:
            engine.dispose()
        if version is None:
            return _fail(EXIT_USAGE, f"no program {args.program!r} in force")
        disclose += list(version.rules.groups_any)  # what the program's rule looks at
    text = wallet.presentation(disclose, keys.utc_now())
    png = qr_png(text, args.out or wallet_path.with_suffix(".png"))
    print(text)
    print(
        f"{len(text)} characters, QR version {qr_version(text)} at Q; PNG: {png}; "
        f"credential valid until {saved['exp']}",
        file=sys.stderr,
    )
    return EXIT_OK


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", help="the data directory (default: $UNIONLEDGER_DATA_DIR)", default=None
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unionledger",
        description="UnionLedger: union membership credentials and benefit redemption on a "
        "verifiable ledger.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the HTTP API")
    _data_dir(serve)
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="initialise the data directory with demo keys and data if needed "
        "(development passphrase allowed)",
    )
    serve.set_defaults(func=cmd_serve)

    init = sub.add_parser("init", help="create a data directory: keys and database")
    _data_dir(init)
    init.add_argument("--demo", action="store_true", help="a demo directory (see serve --demo)")
    init.add_argument(
        "--provinces",
        nargs="?",
        const="",
        metavar="CSV",
        help="also create the provincial federations listed in CSV (columns code, name_zh, "
        "name_en, federation_zh; default: the shared GB/T 2260 reference data)",
    )
    init.set_defaults(func=cmd_init)

    _add_keys_commands(sub.add_parser("keys", help="manage Ed25519 keys and the trust list"))
    _add_ledger_commands(sub.add_parser("ledger", help="the ledger: status, export, projections"))
    _add_accounts_commands(sub.add_parser("accounts", help="officials' and auditors' logins"))
    _add_station_commands(sub.add_parser("station", help="a station device without a browser"))
    _add_stats_commands(sub.add_parser("stats", help="statistics, statements, settlement, audit"))

    member = sub.add_parser("member", help="a member's side: a development wallet")
    msub = member.add_subparsers(dest="member_command", required=True, metavar="ACTION")
    k = msub.add_parser(
        "qr",
        help="print a fresh station QR presentation of a member and write its PNG",
        description="The first run registers a new holder key for the member (as the member "
        "app does: any previous credential is revoked) and keeps key and credential in a "
        "wallet file (0600). Exit 0; 1 not issuable (member not active, no issuer key); "
        "2 usage.",
    )
    _data_dir(k)
    k.add_argument(
        "member_id", metavar="MEMBER_ID", help="the member id (one starting with '-': after '--')"
    )
    k.add_argument(
        "--disclose",
        action="append",
        default=[],
        metavar="GROUP",
        help="disclose this group (repeatable; the groups a program needs)",
    )
    k.add_argument("--program", help="disclose the groups this program's eligibility rule looks at")
    k.add_argument("--wallet", help="wallet file (default: DATA_DIR/wallet-MEMBER_ID.json)")
    k.add_argument("--renew", action="store_true", help="register a new key and credential")
    k.add_argument("--out", help="PNG path (default: the wallet's name with .png)")
    k.set_defaults(func=cmd_member_qr)

    v = sub.add_parser(
        "verify-receipt",
        help="verify a receipt offline against the log's public key",
        description="FILE is a receipt (GET /v1/log/receipt/N, or the 'receipt' of a redemption "
        "answer, or the whole answer). Exit status: 0 verified, 1 not verified, 2 usage.",
    )
    v.add_argument("file", metavar="FILE")
    v.add_argument(
        "--public-key",
        required=True,
        help="the log's note verifier key <name>+<hex id>+<base64 key>, or a file holding it",
    )
    v.add_argument("--origin", help="the log origin to expect (default: the key's name)")
    v.set_defaults(func=cmd_verify_receipt)

    a = sub.add_parser(
        "audit",
        help="verify a ledger from a server URL or an export file, trusting only its log key"
        " (or a pinned root key)",
        description="Exit status: 0 verified, 1 verification failed, 2 usage or I/O error.",
    )
    a.add_argument("source", metavar="SOURCE", help="http(s)://server or an export file")
    a.add_argument(
        "--public-key",
        action="append",
        help="a log key to trust: its note verifier key <name>+<hex id>+<base64 key>, or a file"
        " holding it; give it again for each key (the old and the new one across a rotation)",
    )
    a.add_argument(
        "--root",
        metavar="FILE",
        help="instead (or as well): the pinned root key, a JWK or JWKS file; the log keys are"
        " taken from the server's trust list verified against it (a server URL only)",
    )
    a.add_argument("--origin", help="the log origin to expect (default: the key's name)")
    a.add_argument(
        "--state", help="file remembering the last verified checkpoint (catches rewrites)"
    )
    a.set_defaults(func=cmd_audit)
    return parser


def _add_ledger_commands(ledger_cmd: argparse.ArgumentParser) -> None:
    lsub = ledger_cmd.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    k = lsub.add_parser("status", help="size, root and latest checkpoint")
    _data_dir(k)
    k.set_defaults(func=cmd_ledger_status)
    k = lsub.add_parser("export", help="write the entries and their checkpoint for offline audit")
    _data_dir(k)
    k.add_argument("--out", required=True, help="the export file to write")
    k.set_defaults(func=cmd_ledger_export)
    k = lsub.add_parser("rebuild", help="replay the chain into fresh projection tables")
    _data_dir(k)
    k.set_defaults(func=cmd_ledger_rebuild)
    k = lsub.add_parser("check", help="compare the projection tables with a replay of the chain")
    _data_dir(k)
    k.set_defaults(func=cmd_ledger_check)


def _add_keys_commands(keys_cmd: argparse.ArgumentParser) -> None:
    ksub = keys_cmd.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    k = ksub.add_parser("init", help="create the keyring (root, log, api and issuer keys)")
    _data_dir(k)
    k.add_argument("--demo", action="store_true", help="allow the development passphrase")
    k.set_defaults(func=cmd_keys_init)

    k = ksub.add_parser("list", help="list keys with their roles and validity")
    _data_dir(k)
    k.add_argument("--json", action="store_true", help="machine-readable output")
    k.set_defaults(func=cmd_keys_list)

    k = ksub.add_parser("rotate", help="create the next key of a role, published ahead of use")
    _data_dir(k)
    k.add_argument("role", choices=[r.value for r in keys.Role], metavar="ROLE")
    k.add_argument("--scope", help="union code (issuer) or station id (station)")
    k.add_argument(
        "--lead-days",
        type=float,
        default=None,
        help="days before the new key may sign (default: issuer/root 30, log 7, others 0)",
    )
    k.set_defaults(func=cmd_keys_rotate)

    k = ksub.add_parser(
        "revoke",
        help="revoke a key (compromise) from a time on",
        epilog="A key id may start with '-': write `unionledger keys revoke -- KID` then.",
    )
    _data_dir(k)
    k.add_argument("kid", metavar="KID")
    k.add_argument("--at", help="RFC 3339 time the revocation takes effect (default: now)")
    k.add_argument("--reason", help="why (kept in the keyring)")
    k.set_defaults(func=cmd_keys_revoke)

    k = ksub.add_parser(
        "register", help="register a public key made elsewhere (a station device's key)"
    )
    _data_dir(k)
    k.add_argument("role", choices=[keys.Role.STATION.value], metavar="ROLE")
    k.add_argument("--scope", required=True, help="the station id")
    k.add_argument("--jwk", required=True, help="file with the device's Ed25519 public JWK")
    k.add_argument("--not-before", help="RFC 3339 time the key may start signing (default: now)")
    k.set_defaults(func=cmd_keys_register)

    k = ksub.add_parser(
        "reseal", help="seal the key records as they stand (an old file, or an edit by hand)"
    )
    _data_dir(k)
    k.set_defaults(func=cmd_keys_reseal)

    k = ksub.add_parser("export-public", help="print every public key as a JWKS")
    _data_dir(k)
    k.add_argument("--out", help="write to this file instead of stdout")
    k.set_defaults(func=cmd_keys_export_public)

    k = ksub.add_parser("trust-list", help="print a trust list signed by the root key")
    _data_dir(k)
    k.add_argument("--ttl-days", type=float, default=7.0, help="validity (default 7 days)")
    k.add_argument("--out", help="write to this file instead of stdout")
    k.set_defaults(func=cmd_keys_trust_list)

    k = ksub.add_parser(
        "verify-trust-list", help="verify a trust list against a pinned root public key"
    )
    k.add_argument("token_file", metavar="TRUST_LIST_FILE")
    k.add_argument("--root", required=True, help="the root public key: a JWK or JWKS file")
    k.set_defaults(func=cmd_keys_verify_trust_list)


# -- accounts (officials' and auditors' logins: api/auth.py, ledger/accounts.py) ---------------


def _add_accounts_commands(accounts_cmd: argparse.ArgumentParser) -> None:  # noqa: PLR0915
    # (one self-contained function for the whole group, handlers included)
    """``unionledger accounts add|list|disable|unlock|reset-totp``. Exit 1: username taken or
    unknown; 2: unusable username, role, scope or password. The password comes from
    ``UNIONLEDGER_NEW_PASSWORD`` or a prompt, and is never echoed, printed or logged."""
    import getpass  # noqa: PLC0415
    from contextlib import contextmanager  # noqa: PLC0415

    from sqlalchemy import Connection  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from api.bootstrap import ledger_writer  # noqa: PLC0415
    from ledger import accounts  # noqa: PLC0415  (also registers the tables)
    from ledger.domain import (  # noqa: PLC0415
        SYSTEM,
        DomainError,
        Invalid,
    )

    @contextmanager
    def transaction(args: argparse.Namespace) -> Iterator[Connection]:
        from ledger.db import make_engine  # noqa: PLC0415
        from ledger.schema import init_schema  # noqa: PLC0415

        settings = _settings(args)
        # The operator proves they hold the keyring's passphrase (auth.md section 8), as for
        # the commands that write to the ledger: `reset-totp` switches a second factor off.
        keys.KeyStore(settings.data_dir).load(settings.passphrase())
        engine = make_engine(settings.database_url)
        try:
            init_schema(engine)  # creates the account tables in an older database
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()

    def on_ledger(args: argparse.Namespace, command: Callable[[Tx], T]) -> T:
        with ledger_writer(_settings(args)) as (_engine, sequencer):
            return sequencer.execute(command)

    def run(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def wrapped(args: argparse.Namespace) -> int:
            try:
                return action(args)
            except Invalid as e:
                return _fail(EXIT_USAGE, str(e))
            except DomainError as e:
                return _fail(EXIT_FAILED, str(e))
            except (SQLAlchemyError, RuntimeError) as e:
                return _fail(EXIT_FAILED, f"database: {type(e).__name__}")

        return wrapped

    def new_password() -> str:
        from_env = os.environ.get("UNIONLEDGER_NEW_PASSWORD")
        if from_env:
            return from_env
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise Invalid("the two passwords differ")
        return password

    def add(args: argparse.Namespace) -> int:
        accounts.check_new_password(password := new_password())
        account = on_ledger(
            args,
            lambda tx: accounts.grant_account(
                tx,
                SYSTEM,
                username=args.username,
                password=password,
                role=args.role,
                scope=args.scope,
            ),
        )
        print(f"created {account.role.value} account {account.account_id} ({account.username})")
        return EXIT_OK

    def list_(args: argparse.Namespace) -> int:
        now = int(keys.utc_now().timestamp())
        with transaction(args) as conn:
            rows = accounts.list_accounts(conn)
        status = {
            a.account_id: "disabled" if a.disabled else "locked" if a.locked_at(now) else "active"
            for a in rows
        }
        if args.json:
            doc = [
                {
                    "username": a.username,
                    "account_id": a.account_id,
                    "role": a.role.value,
                    "scope": a.scope,
                    "totp": a.totp_enabled,
                    "status": status[a.account_id],
                }
                for a in rows
            ]
            print(json.dumps(doc, indent=2, ensure_ascii=False))
            return EXIT_OK
        print(f"{'USERNAME':<24} {'ACCOUNT':<22} {'ROLE':<9} {'SCOPE':<10} {'TOTP':<5} STATUS")
        for a in rows:
            print(
                f"{a.username:<24} {a.account_id:<22} {a.role.value:<9} {a.scope or '-':<10} "
                f"{'yes' if a.totp_enabled else 'no':<5} {status[a.account_id]}"
            )
        return EXIT_OK

    def disable(args: argparse.Namespace) -> int:
        account = on_ledger(args, lambda tx: accounts.withdraw_account(tx, SYSTEM, args.username))
        print(f"disabled {account.username} ({account.account_id}); its sessions are revoked")
        return EXIT_OK

    def unlock(args: argparse.Namespace) -> int:
        with transaction(args) as conn:
            account = accounts.unlock_account(conn, args.username)
        print(f"unlocked {account.username} ({account.account_id}); its failures count from 0")
        return EXIT_OK

    def reset_totp(args: argparse.Namespace) -> int:
        now = int(keys.utc_now().timestamp())
        with transaction(args) as conn:
            account = accounts.reset_totp(conn, args.username, now)
        print(
            f"TOTP is off for {account.username} ({account.account_id}); its sessions are"
            " revoked: it logs in with the password and may set TOTP up again"
        )
        return EXIT_OK

    asub = accounts_cmd.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    k = asub.add_parser(
        "add",
        help="create an official's or auditor's account",
        description="The password (12+ characters) is read from $UNIONLEDGER_NEW_PASSWORD, "
        "or asked for without echo.",
    )
    _data_dir(k)
    k.add_argument("--username", required=True)
    k.add_argument("--role", required=True, choices=sorted(r.value for r in accounts.ACCOUNT_ROLES))
    k.add_argument("--scope", help="an official's union code (their subtree)")
    k.set_defaults(func=run(add))
    k = asub.add_parser("list", help="list accounts (never their secrets)")
    _data_dir(k)
    k.add_argument("--json", action="store_true", help="machine-readable output")
    k.set_defaults(func=run(list_))
    k = asub.add_parser("disable", help="disable an account and end its sessions")
    _data_dir(k)
    k.add_argument("username", metavar="USERNAME")
    k.set_defaults(func=run(disable))
    k = asub.add_parser("unlock", help="end an account's lock after failed logins")
    _data_dir(k)
    k.add_argument("username", metavar="USERNAME")
    k.set_defaults(func=run(unlock))
    k = asub.add_parser(
        "reset-totp", help="switch an account's TOTP off (a lost authenticator); end its sessions"
    )
    _data_dir(k)
    k.add_argument("username", metavar="USERNAME")
    k.set_defaults(func=run(reset_totp))


class _OneLineLog(logging.Formatter):
    """A command's log lines: one line each, an exception named but never its traceback (a
    command's errors are one line on stderr, README.md). ``serve`` keeps tracebacks: they are
    for whoever reads a server's log."""

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        line = super().format(record)
        return line if error is None else f"{line} ({type(error).__name__}: {error})"


def _logging(serving: bool) -> None:
    form = "%(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(form) if serving else _OneLineLog(form))
    logging.basicConfig(level=logging.INFO, handlers=[handler])  # a no-op if set up already


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911  (one exit per error kind)
    parser = build_parser()
    args = parser.parse_args(argv)
    serving = args.command == "serve" or getattr(args, "station_command", None) == "serve"
    _logging(serving)
    try:
        code: int = args.func(args)
    except keys.WrongPassphrase as e:
        return _fail(EXIT_PASSPHRASE, e.diagnostics())
    except (keys.CorruptKeyFile, keys.KeyringMissing) as e:
        return _fail(EXIT_KEYFILE, e.diagnostics())
    except ConfigError as e:
        return _fail(EXIT_CONFIG, f"configuration: {e}")
    except keys.KeysError as e:
        return _fail(EXIT_FAILED, e.diagnostics())
    except BrokenPipeError:  # e.g. `unionledger keys list | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (keeps the exit flush quiet)
        return EXIT_OK
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(EXIT_FAILED, f"{where}{e.strerror or e}")
    except ValueError as e:
        return _fail(EXIT_FAILED, str(e))
    except KeyboardInterrupt:
        return _fail(130, "interrupted")
    return code


def _fail(code: int, message: str) -> int:
    print(f"unionledger: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
