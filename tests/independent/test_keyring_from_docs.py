"""The keyring file and the keys on the chain, verified from docs/keys.md (sections 4 and 5),
docs/events.md (section 15) and docs/formats.md alone, through ``keyring_verifier``.

The harness (this file's fixtures, ``conftest.py``) may use the repository's code: it runs
``unionledger init`` and ``unionledger keys ...`` as subprocesses, starts servers and edits files
the way an attacker or an operator would. Every check goes through ``keyring_verifier`` (and
``ledger_verifier`` for trust lists and entries) only.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from nacl.signing import SigningKey

import keys
from api.app import create_app, server_app
from api.bootstrap import init_data_dir
from api.settings import Settings
from tests.independent import keyring_verifier as kv
from tests.independent import ledger_verifier as lv
from tests.independent.conftest import PASSPHRASE, DemoServer

REPO = Path(__file__).resolve().parents[2]
STORY_PASSPHRASE = "keyring story passphrase"
ISSUER_LEAD = 30 * 86400  # keys 1: the issuer's default lead time
DOCS_AAD = (
    b"unionledger-keyring/1 records\n"
    b'[{"jwk":{},"kid":"a-kid","not_before":"2026-12-07T00:00:00Z","role":"root"},'
    b'{"jwk":{"crv":"Ed25519","kty":"OKP","x":"X2"},"kid":"b-kid",'
    b'"not_before":"2026-12-07T00:00:00Z","role":"station","scope":"\xe7\xab\x99-1"}]'
)


def _now() -> int:
    return int(time.time())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli_env(passphrase: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIONLEDGER_")}
    env["UNIONLEDGER_KEY_PASSPHRASE"] = passphrase
    return env


def cli(*args: str, passphrase: str = STORY_PASSPHRASE) -> subprocess.CompletedProcess[str]:
    """``unionledger ...`` as a subprocess (the harness)."""
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=REPO,
        env=_cli_env(passphrase),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_many(
    commands: list[tuple[list[str], str]],
) -> list[tuple[int, str, str]]:
    """Several independent ``unionledger`` commands at once (rc, stdout, stderr each)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            cwd=REPO,
            env=_cli_env(passphrase),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, passphrase in commands
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        out.append((proc.returncode, stdout, stderr))
    return out


def start_cli(*args: str) -> subprocess.Popen[str]:
    """``unionledger ...`` started in the background (the harness), for ``finish``."""
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", *args],
        cwd=REPO,
        env=_cli_env(STORY_PASSPHRASE),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, (proc.returncode, stdout, stderr)
    return stdout


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def replace_file(path: Path, data: bytes) -> None:
    """Put bytes in place the way a restore would (a new file renamed over the old one)."""
    tmp = path.with_name(path.name + ".restore")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def edit(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    document = json.loads(data)
    change(document)
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def entry_of(document: dict[str, Any], kid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in document["keys"] if e["kid"] == kid)
    return found


def new_station_record(scope: str) -> dict[str, Any]:
    x = kv.b64ue(bytes(SigningKey.generate().verify_key))
    return {
        "kid": lv.jwk_thumbprint(x),
        "role": "station",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x},
        "not_before": "2026-12-07T00:00:00Z",
        "scope": scope,
    }


# ---------------------------------------------------------------- keys 4.4: the documented bytes
def test_documented_records_aad_reproduces_byte_for_byte() -> None:
    entries: list[dict[str, Any]] = [
        {"role": "root", "kid": "a-kid", "not_before": "2026-12-07T00:00:00Z", "jwk": {}},
        {
            "kid": "b-kid",
            "role": "station",
            "scope": "站-1",
            "private": "...",
            "jwk": {"x": "X2", "kty": "OKP", "crv": "Ed25519"},
            "not_before": "2026-12-07T00:00:00Z",
        },
    ]
    assert kv.records_aad(entries) == DOCS_AAD
    assert kv.records_aad(list(reversed(entries))) == DOCS_AAD  # sorted by kid
    assert not DOCS_AAD.endswith(b"\n")
    # keys 4.4: "which is what Python's json.dumps(...) writes", and their JCS form.
    stripped = sorted(
        ({k: v for k, v in e.items() if k != "private"} for e in entries), key=lambda e: e["kid"]
    )
    reference = json.dumps(stripped, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert kv.records_bytes(entries) == reference.encode("utf-8") == lv.canonical_bytes(stripped)
    # keys 4.4: the escapes JSON requires, lower-case \u00XX, nothing else escaped.
    tricky = [{"kid": "k", "note": 'a"\\\b\t\n\f\r\x01\x1f\x7f/é\u2028'}]
    assert kv.records_bytes(tricky) == (
        '[{"kid":"k","note":"a\\"\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\x7f/é\u2028"}]'.encode()
    )
    with pytest.raises(kv.Damaged, match="lone surrogate"):
        kv.records_bytes([{"kid": "k", "note": "\ud800"}])
    # keys 4.4, the AAD table: a root key's AAD as documented.
    kid = "JRhEzNhQ1LCqc5tqKKGWwIophxsAxxfz896_66KkjSQ"
    assert kv.key_aad(kid, "root") == f"unionledger-keyring/1 key {kid} root".encode()


def test_key_id_vector_of_keys_2() -> None:
    assert (
        lv.jwk_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )


def test_times_as_keys_conventions_say() -> None:
    assert kv.parse_time("2026-11-25T08:46:12Z") == 1795596372
    # other offsets converted to UTC, fractions truncated (not rounded)
    assert kv.parse_time("2026-11-25T16:46:12.999+08:00") == 1795596372
    assert kv.format_time(1795596372) == "2026-11-25T08:46:12Z"
    for bad in ("2026-11-25 08:46:12", "2026-02-30T00:00:00Z", "2026-11-25T08:46:12", 1795596372):
        with pytest.raises(ValueError, match=r"RFC 3339|no such"):
            kv.parse_time(bad)


# ---------------------------------------------------------------- the demo server's keyring
def demo_keyring_bytes(server: DemoServer) -> bytes:
    return (server.settings.data_dir / "keys" / "keyring.json").read_bytes()


def test_demo_keyring_opens_and_its_seal_verifies(demo_server: DemoServer) -> None:
    data = demo_keyring_bytes(demo_server)
    keyring = kv.open_keyring(data, PASSPHRASE)
    document = json.loads(data)
    # keys 4.7: the lengths of the stored values
    assert len(document["kdf"]["salt"]) == 22
    assert len(document["check"]) == 102
    assert len(document["records"]) == 54
    assert {len(s) for s in document["secrets"].values()} == {96}
    assert {len(e["private"]) for e in document["keys"] if e.get("private")} == {96}
    # keys 4.2: the three secrets, 32 bytes each
    assert set(keyring.secrets) == {"vault-master", "member-pseudonym", "accounts"}
    # keys 1: root, log, api and the national issuer at least, each with its private half
    roles = {(fk.key.role, fk.key.scope) for fk in keyring.keys.values() if fk.seed}
    assert {("root", None), ("log", None), ("api", None), ("issuer", "100000")} <= roles
    # the records' bytes as keys 4.4 defines them equal the JCS form of the records
    stripped = sorted(
        ({k: v for k, v in e.items() if k != "private"} for e in keyring.public.entries),
        key=lambda e: e["kid"],
    )
    assert kv.records_bytes(keyring.public.entries) == lv.canonical_bytes(stripped)


def test_demo_layout_and_member_order_do_not_matter(demo_server: DemoServer) -> None:
    """keys 4.1: readers depend on neither member order nor layout (the seal still opens)."""
    document = json.loads(demo_keyring_bytes(demo_server))
    document["keys"].reverse()
    document["keys"] = [dict(reversed(list(e.items()))) for e in document["keys"]]
    pretty = json.dumps(dict(reversed(list(document.items()))), indent=3).encode()
    original = kv.open_keyring(demo_keyring_bytes(demo_server), PASSPHRASE).facts()
    assert kv.open_keyring(pretty, PASSPHRASE).facts() == original


def test_demo_chain_folds_into_the_servers_trust_list(
    demo_server: DemoServer, http: httpx.Client
) -> None:
    """events 15 replayed from the entries served (formats 4) equal the trust list (keys 5.1),
    and the file and the chain agree key by key (keys 4.6)."""
    now = _now()
    size, entries = kv.read_log(http, demo_server.root_jwk, demo_server.origin, now)
    assert size > 100
    kv.check_key_events(entries)
    chain = kv.fold_key_events(entries)
    claims = lv.verify_trust_list(http.get("/v1/trust-list").text, [demo_server.root_jwk], now)
    assert claims["keys"] == kv.trust_list_entries(chain.values())
    keyring = kv.open_keyring(demo_keyring_bytes(demo_server), PASSPHRASE)
    merged = kv.merge(keyring.keys, chain)
    assert {kid: m.key for kid, m in merged.items()} == chain  # nothing missing on either side
    # events 15 / keys 4.6: a fresh data directory's first entries are its keys' KeyPublished
    first = [e["type"] for e in entries[: len(chain)]]
    assert first == ["KeyPublished"] * len(chain), first


# ---------------------------------------------------------------- tampering (keys 4.5)
@pytest.fixture(scope="module")
def demo_bytes(demo_server: DemoServer) -> bytes:
    return demo_keyring_bytes(demo_server)


def _issuer_kid(data: bytes) -> str:
    return str(
        next(
            e["kid"]
            for e in json.loads(data)["keys"]
            if e["role"] == "issuer" and e["scope"] == "100000"
        )
    )


def test_record_edits_are_records_changed_not_wrong_passphrase(demo_bytes: bytes) -> None:
    kid = _issuer_kid(demo_bytes)

    def rescope(d: dict[str, Any]) -> None:
        entry_of(d, kid)["scope"] = "440000"

    def revoke(d: dict[str, Any]) -> None:
        entry_of(d, kid)["revoked_at"] = "2026-12-07T00:00:00Z"

    def move_window(d: dict[str, Any]) -> None:
        entry_of(d, kid)["not_before"] = "2020-01-01T00:00:00Z"

    def add_station(d: dict[str, Any]) -> None:
        d["keys"].append(new_station_record("st-rogue"))

    def drop_key(d: dict[str, Any]) -> None:
        d["keys"] = [e for e in d["keys"] if e["kid"] != kid]

    def drop_seal(d: dict[str, Any]) -> None:
        del d["records"]

    def seal_not_string(d: dict[str, Any]) -> None:
        d["records"] = None

    for change in (
        rescope,
        revoke,
        move_window,
        add_station,
        drop_key,
        drop_seal,
        seal_not_string,
    ):
        edited = edit(demo_bytes, change)
        kv.read_keyring(edited)  # steps 1-3 (no passphrase) cannot see it
        with pytest.raises(kv.RecordsChanged):
            kv.open_keyring(edited, PASSPHRASE)
        # step 5 comes first: a wrong passphrase is reported as such, even on an edited file
        with pytest.raises(kv.WrongPassphrase):
            kv.open_keyring(edited, PASSPHRASE + "!")
    # a member 4.2 does not list is damage that needs no passphrase to see (step 3)
    with pytest.raises(kv.Damaged, match="does not list"):
        kv.read_keyring(edit(demo_bytes, lambda d: entry_of(d, kid).update(comment="harmless?")))
    # dropping `private` only is not a change of the records (4.4: private is not sealed in)
    unsealed_private = edit(demo_bytes, lambda d: entry_of(d, kid).pop("private"))
    assert kv.open_keyring(unsealed_private, PASSPHRASE).keys[kid].seed is None


def test_damaged_files_are_damaged(demo_bytes: bytes) -> None:
    document = json.loads(demo_bytes)
    with_private = [e for e in document["keys"] if e.get("private")]
    a, b = with_private[0], with_private[1]

    def swap_private(d: dict[str, Any]) -> None:
        ea, eb = entry_of(d, a["kid"]), entry_of(d, b["kid"])
        ea["private"], eb["private"] = eb["private"], ea["private"]

    def swap_secrets(d: dict[str, Any]) -> None:
        s = d["secrets"]
        s["accounts"], s["vault-master"] = s["vault-master"], s["accounts"]

    def no_check(d: dict[str, Any]) -> None:
        del d["check"]

    cases: list[tuple[Callable[[dict[str, Any]], None], str]] = [
        (swap_private, "does not open"),
        (swap_secrets, "does not open"),
        (no_check, "check"),
        (lambda d: d["kdf"].update(opslimit=3.0), "opslimit"),
        (lambda d: d["kdf"].update(opslimit=True), "opslimit"),
        (lambda d: d["kdf"].update(memlimit=2**30 + 1024), "memlimit"),
        (lambda d: d["kdf"].update(salt=d["kdf"]["salt"][:-2]), "salt"),
        (lambda d: d.update(aead="aes256gcm"), "aead"),
        (lambda d: d.update(format="unionledger-keyring/2"), "format"),
        (lambda d: entry_of(d, a["kid"]).update(kid=b["kid"]), "thumbprint"),
        (lambda d: entry_of(d, a["kid"])["jwk"].update(d="AAAA"), "kty, crv, x"),
        (lambda d: entry_of(d, a["kid"]).update(not_after=a["not_before"]), "not later"),
        (lambda d: entry_of(d, a["kid"]).update(revocation_reason="x"), "revocation_reason"),
    ]
    for change, message in cases:
        with pytest.raises(kv.Damaged, match=message) as caught:
            kv.open_keyring(edit(demo_bytes, change), PASSPHRASE)
        assert not isinstance(caught.value, kv.RecordsChanged), message
    # a member name given twice; a lone surrogate in a record
    text = demo_bytes.decode()
    twice = text.replace('"aead":', '"aead": "x", "aead":', 1).encode()
    with pytest.raises(kv.Damaged, match="twice"):
        kv.open_keyring(twice, PASSPHRASE)
    surrogate = edit(
        demo_bytes,
        lambda d: entry_of(d, a["kid"]).update(
            revoked_at="2027-01-01T00:00:00Z", revocation_reason="@"
        ),
    )
    surrogate = surrogate.replace(b'"revocation_reason": "@"', b'"revocation_reason": "\\ud800"')
    with pytest.raises(kv.Damaged, match="surrogate"):
        kv.open_keyring(surrogate, PASSPHRASE)
    # an altered check cannot be told from a wrong passphrase (keys 4.5)
    for check in (json.loads(demo_bytes)["check"][:-2] + "AA", "!!!"):
        altered = demo_bytes.replace(json.loads(demo_bytes)["check"].encode(), check.encode())
        with pytest.raises(kv.WrongPassphrase):
            kv.open_keyring(altered, PASSPHRASE)
    with pytest.raises(kv.KeyringError, match="empty"):
        kv.open_keyring(demo_bytes, "")


# ---------------------------------------------------------------- events 15 and keys 4.6 (rules)
def _key(role: str = "issuer", scope: str | None = "100000", nbf: int = 1795596372) -> kv.Key:
    x = kv.b64ue(bytes(SigningKey.generate().verify_key))
    return kv.Key(lv.jwk_thumbprint(x), role, x, scope, nbf)


def _entry(i: int, kind: str, body: dict[str, Any], actor: str = "system:server") -> dict[str, Any]:
    return {"index": i, "time": f"2026-12-07T00:00:0{i}.000000Z", "type": kind, "actor": actor,
            "body": body}  # fmt: skip


def _published(key: kv.Key) -> dict[str, Any]:
    return kv.expected_key_events({key.kid: key}, {})[0][1]


def test_fold_follows_the_replay_rules() -> None:
    a, b = _key(), _key("log", None)
    t = kv.format_time
    entries = [
        _entry(0, "KeyPublished", _published(a)),
        _entry(1, "KeyPublished", {**_published(a), "not_after": t(a.not_before + 99)}),
        _entry(2, "KeyRevoked", {"kid": a.kid, "revoked_at": t(a.not_before + 50)}),
        _entry(3, "KeyRevoked", {"kid": a.kid, "revoked_at": t(a.not_before + 70)}),
        _entry(4, "KeyRetired", {"kid": b.kid, "not_after": t(b.not_before + 5)}),
        _entry(5, "KeyRetired", {"kid": a.kid, "not_after": t(a.not_before + 60)}),
        _entry(6, "MemberJoined", {"kid": a.kid}),
    ]
    folded = kv.fold_key_events(entries)
    # the second KeyPublished changed nothing; the later revocation did not move it; the
    # event for an unknown kid changed nothing
    assert folded == {a.kid: kv.Key(a.kid, a.role, a.x, a.scope, a.not_before,
                                    a.not_before + 60, a.not_before + 50)}  # fmt: skip
    # ... and what the server would never write is flagged by the checker
    for bad in (entries[:2], entries[:4], entries[:5]):
        with pytest.raises(lv.Fail):
            kv.check_key_events(bad)
    kv.check_key_events([entries[0], entries[2], entries[5]])
    for wrong in (
        _entry(0, "KeyPublished", _published(a), actor="official:acct-0000000000000000"),
        _entry(0, "KeyPublished", {**_published(a), "extra": 1}),
        _entry(0, "KeyPublished", {**_published(a), "kid": b.kid}),
        _entry(0, "KeyPublished", {**_published(a), "not_before": "2026-11-25T16:46:12+08:00"}),
    ):
        with pytest.raises(lv.Fail):
            kv.check_key_events([wrong])


def test_merge_takes_the_earlier_times_and_refuses_conflicts() -> None:
    a = _key()
    c = _key("station", "st-1")
    file_a = kv.FileKey(replace(a, not_after=a.not_before + 100), "why", None, b"s" * 32)
    chain = {a.kid: replace(a, not_after=a.not_before + 200, revoked_at=a.not_before + 10),
             c.kid: c}  # fmt: skip
    merged = kv.merge({a.kid: file_a}, chain)
    assert merged[a.kid].key == replace(
        a, not_after=a.not_before + 100, revoked_at=a.not_before + 10
    )
    assert (merged[a.kid].seed, merged[a.kid].reason) == (b"s" * 32, "why")
    assert merged[c.kid] == kv.MergedKey(c, None, None, in_file=False, on_chain=True)
    for field, changed in (
        ("role", replace(a, role="log", scope=None)),
        ("scope", replace(a, scope="440000")),
        ("not_before", replace(a, not_before=a.not_before + 1)),
    ):
        with pytest.raises(kv.KeyringConflict, match=field):
            kv.merge({a.kid: kv.FileKey(changed, None, None)}, chain)


# ---------------------------------------------------------------- the CLI story (keys 3, 4.6, 5)
@dataclass
class Step:
    name: str
    file: bytes
    entries: list[dict[str, Any]]
    output: str


@dataclass
class Story:
    data_dir: Path
    root_jwk: dict[str, Any]
    origin: str
    steps: dict[str, Step]
    revoked_at: int
    trust_lists: dict[str, str]  # where it was signed -> token
    conflict: subprocess.CompletedProcess[str]
    file_path: Path


def _serve(data_dir: Path) -> tuple[uvicorn.Server, threading.Thread, str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"UNIONLEDGER_KEY_PASSPHRASE": STORY_PASSPHRASE, "UNIONLEDGER_PUBLIC_URL": url}
    app = create_app(Settings.load(data_dir=data_dir, demo=False, environ=env))
    server = uvicorn.Server(
        uvicorn.Config(server_app(app), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
        time.sleep(0.02)
    return server, thread, url, app


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """``unionledger init``, a server on the data directory, then ``keys rotate`` and ``keys
    revoke`` from the command line, and finally older copies of the keyring put back. After
    each step: the file's bytes and the chain as the server serves it."""
    data_dir = tmp_path_factory.mktemp("keyring-story") / "data"
    env = {"UNIONLEDGER_KEY_PASSPHRASE": STORY_PASSPHRASE}
    settings = Settings.load(data_dir=data_dir, demo=False, environ=env)
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())  # the server publishes
    path = data_dir / "keys" / "keyring.json"
    server, thread, url, app = _serve(data_dir)
    services = app.state.services
    root_jwk = services.keyring.current(keys.Role.ROOT, keys.utc_now()).public_key.to_jwk()
    origin = services.settings.log_origin
    steps: dict[str, Step] = {}
    trust_lists: dict[str, str] = {}
    try:
        with httpx.Client(base_url=url, timeout=30) as http:

            def snapshot(name: str, output: str) -> None:
                deadline = time.monotonic() + 10
                while True:  # the checkpoint covering the step may follow a moment later
                    _, entries = kv.read_log(http, root_jwk, origin, _now())
                    before = list(steps.values())[-1].entries if steps else []
                    if len(entries) > len(before) or time.monotonic() > deadline:
                        break
                    if name.startswith(("later", "rollback")):
                        time.sleep(1.2)  # a step that must append nothing: give it time
                        _, entries = kv.read_log(http, root_jwk, origin, _now())
                        break
                    time.sleep(0.1)
                steps[name] = Step(name, path.read_bytes(), entries, output)

            snapshot("init", "")
            issuer0 = _issuer_kid(path.read_bytes())
            snapshot("rotate issuer", ok(cli("keys", "rotate", "issuer", "--scope", "100000",
                                             "--data-dir", str(data_dir))))  # fmt: skip
            snapshot("rotate station", ok(cli("keys", "rotate", "station", "--scope", "st-1",
                                              "--data-dir", str(data_dir))))  # fmt: skip
            revoked_at = _now() - 5
            at = time.strftime("%Y-%m-%dT%H:%M:%S.9+08:00", time.gmtime(revoked_at + 8 * 3600))
            snapshot("revoke", ok(cli("keys", "revoke", "--at", at, "--reason", "laptop stolen",
                                      "--data-dir", str(data_dir), "--", issuer0)))  # fmt: skip
            later = kv.format_time(revoked_at + 3600)
            revoke = ("keys", "revoke", "--data-dir", str(data_dir), "--at")
            snapshot("later revoke", ok(cli(*revoke, later, "--", issuer0)))
            earlier = kv.format_time(revoked_at - 60)
            snapshot("earlier revoke", ok(cli(*revoke, earlier, "--", issuer0)))
            trust_list = start_cli("keys", "trust-list", "--data-dir", str(data_dir))
            time.sleep(1.2)  # keys 3.6: the server looks at the file every second
            trust_lists["server"] = http.get("/v1/trust-list").text
            trust_lists["cli"] = finish(trust_list)
            # an older copy of the whole file: from before the revocations, then from init
            replace_file(path, steps["rotate station"].file)
            trust_list = start_cli("keys", "trust-list", "--data-dir", str(data_dir))
            snapshot("rollback before revoke", "")  # waits for the server to see the file
            trust_lists["server after rollback"] = http.get("/v1/trust-list").text
            trust_lists["cli after rollback"] = finish(trust_list)
            replace_file(path, steps["init"].file)
            trust_list = start_cli("keys", "trust-list", "--data-dir", str(data_dir))
            snapshot("rollback to init", "")
            trust_lists["server after rollback to init"] = http.get("/v1/trust-list").text
            trust_lists["cli after rollback to init"] = finish(trust_list)
            # a correctly sealed file (sealed here, with the passphrase) that moves a window
            # start the chain knows: keys 4.6, keyring-conflict
            keyring = kv.open_keyring(steps["init"].file, STORY_PASSPHRASE)
            document = json.loads(steps["init"].file)
            entry_of(document, issuer0)["not_before"] = "2026-01-01T00:00:00Z"
            document["records"] = kv.seal(keyring.file_key, b"", kv.records_aad(document["keys"]))
            replace_file(path, json.dumps(document).encode())
            conflict = cli("keys", "trust-list", "--data-dir", str(data_dir))
            replace_file(path, steps["init"].file)
        yield Story(data_dir, root_jwk, origin, steps, revoked_at, trust_lists, conflict, path)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _appended(story: Story, name: str) -> list[dict[str, Any]]:
    names = list(story.steps)
    before = story.steps[names[names.index(name) - 1]].entries
    return story.steps[name].entries[len(before) :]


def _events(entries: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], e["body"]) for e in entries]


def test_init_publishes_its_four_keys_first(story: Story) -> None:
    entries = story.steps["init"].entries
    keyring = kv.open_keyring(story.steps["init"].file, STORY_PASSPHRASE)
    assert sorted(fk.key.role for fk in keyring.keys.values()) == ["api", "issuer", "log", "root"]
    assert _events(entries[:4]) == kv.expected_key_events(keyring.facts(), {})
    assert {e["actor"] for e in entries[:4]} == {"system:server"}
    assert kv.fold_key_events(entries) == keyring.facts()


def test_each_command_appends_what_keys_4_6_says(story: Story) -> None:
    """keys 4.6 "When they are appended" and events 15: for each step, the key events appended
    are those the file (after the step) and the chain (before it) call for, in that order."""
    names = list(story.steps)
    for previous, name in itertools.pairwise(names):
        chain = kv.fold_key_events(story.steps[previous].entries)
        keyring = kv.open_keyring(story.steps[name].file, STORY_PASSPHRASE)
        appended = _appended(story, name)
        assert _events(appended) == kv.expected_key_events(keyring.facts(), chain), name
        assert {e["actor"] for e in appended} <= {"system:server"}
    kv.check_key_events(story.steps["rollback to init"].entries)


def test_rotation_and_revocations_on_the_chain(story: Story) -> None:
    init = kv.open_keyring(story.steps["init"].file, STORY_PASSPHRASE).facts()
    issuer0 = next(k for k in init.values() if k.role == "issuer")
    # keys 3.3: the new issuer key waits its 30-day lead time; the old window ends there
    new_kid, not_before = story.steps["rotate issuer"].output.split()[0], None
    match = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", story.steps["rotate issuer"].output)
    assert match is not None
    not_before = kv.parse_time(match.group(0))
    assert abs(not_before - issuer0.not_before - ISSUER_LEAD) < 60
    new = kv.fold_key_events(story.steps["rotate issuer"].entries)[new_kid]
    assert _events(_appended(story, "rotate issuer")) == [
        ("KeyPublished", {"kid": new_kid, "role": "issuer", "x": new.x, "scope": "100000",
                          "not_before": kv.format_time(not_before), "not_after": None}),
        ("KeyRetired", {"kid": issuer0.kid, "not_after": kv.format_time(not_before)}),
    ]  # fmt: skip
    station = _appended(story, "rotate station")
    assert [(e["type"], e["body"]["role"], e["body"]["scope"], e["body"]["not_after"])
            for e in station] == [("KeyPublished", "station", "st-1", None)]  # fmt: skip
    # keys 3.4: an offset time is converted and truncated; a later time changes nothing; an
    # earlier one moves the revocation
    t = story.revoked_at
    assert _events(_appended(story, "revoke")) == [
        ("KeyRevoked", {"kid": issuer0.kid, "revoked_at": kv.format_time(t)})
    ]
    assert _appended(story, "later revoke") == []
    assert kv.format_time(t) in story.steps["later revoke"].output
    assert _events(_appended(story, "earlier revoke")) == [
        ("KeyRevoked", {"kid": issuer0.kid, "revoked_at": kv.format_time(t - 60)})
    ]
    final = kv.open_keyring(story.steps["earlier revoke"].file, STORY_PASSPHRASE)
    assert final.keys[issuer0.kid].key.revoked_at == t - 60
    assert final.keys[issuer0.kid].reason == "laptop stolen"  # the reason stays in the file
    assert "laptop" not in json.dumps(story.steps["earlier revoke"].entries)


def _verified(story: Story, where: str) -> list[dict[str, Any]]:
    token = story.trust_lists[where].removesuffix("\n")
    keys_: list[dict[str, Any]] = lv.verify_trust_list(token, [story.root_jwk], _now())["keys"]
    return keys_


def test_chain_fold_equals_the_signed_trust_lists(story: Story) -> None:
    """keys 5.1: the trust list is made from the keys in use; with the chain up to date that
    is the fold of the chain, times as NumericDate integers."""
    chain = kv.fold_key_events(story.steps["earlier revoke"].entries)
    expected = kv.trust_list_entries(chain.values())
    assert _verified(story, "server") == expected
    assert _verified(story, "cli") == expected
    issuer0 = next(e for e in expected if e["role"] == "issuer" and "revoked" in e)
    assert issuer0["revoked"] == story.revoked_at - 60
    assert isinstance(issuer0["exp"], int)
    assert story.trust_lists["cli"].endswith("\n")
    assert story.trust_lists["cli"].count("\n") == 1


def test_rollback_cannot_undo_a_revocation(story: Story) -> None:
    """keys 4.5 "What the seals protect" and 4.6: the older copy opens (its seal is right),
    says the key is not revoked, and the merge with the chain keeps it revoked."""
    older = kv.open_keyring(story.steps["rollback before revoke"].file, STORY_PASSPHRASE)
    chain_entries = story.steps["rollback before revoke"].entries
    assert len(chain_entries) == len(story.steps["earlier revoke"].entries)  # nothing appended
    chain = kv.fold_key_events(chain_entries)
    issuer0 = next(k for k in chain.values() if k.revoked_at is not None)
    assert older.keys[issuer0.kid].key.revoked_at is None
    merged = kv.merge(older.keys, chain)
    assert merged[issuer0.kid].key.revoked_at == story.revoked_at - 60
    expected = kv.trust_list_entries(m.key for m in merged.values())
    assert expected == kv.trust_list_entries(chain.values())
    assert _verified(story, "server after rollback") == expected
    assert _verified(story, "cli after rollback") == expected


def test_rollback_past_a_rotation_keeps_the_chains_keys_public_only(story: Story) -> None:
    oldest = kv.open_keyring(story.steps["rollback to init"].file, STORY_PASSPHRASE)
    entries = story.steps["rollback to init"].entries
    assert len(entries) == len(story.steps["earlier revoke"].entries)
    chain = kv.fold_key_events(entries)
    merged = kv.merge(oldest.keys, chain)
    public_only = {kid for kid, m in merged.items() if not m.in_file}
    assert {chain[kid].role for kid in public_only} == {"issuer", "station"}
    assert all(merged[kid].seed is None for kid in public_only)
    issuer0 = next(k for k in chain.values() if k.revoked_at is not None)
    assert oldest.keys[issuer0.kid].key.not_after is None  # the file's window is still open
    assert merged[issuer0.kid].key == chain[issuer0.kid]  # closed and revoked by the chain
    expected = kv.trust_list_entries(m.key for m in merged.values())
    assert _verified(story, "cli after rollback to init") == expected
    assert _verified(story, "server after rollback to init") == expected


def test_a_file_contradicting_the_chain_is_refused(story: Story) -> None:
    """keys 4.6: a file that moves a known key's not_before is refused (keyring-conflict); the
    file was sealed by this module, so the command got past step 5a: the seals agree."""
    assert story.conflict.returncode == 5, story.conflict.stderr
    assert "does not agree with the ledger" in story.conflict.stderr, story.conflict.stderr
    assert "corrupt-key-file" not in story.conflict.stderr
    keyring = kv.open_keyring(story.steps["init"].file, STORY_PASSPHRASE)
    chain = kv.fold_key_events(story.steps["earlier revoke"].entries)
    issuer0 = next(k for k in chain.values() if k.revoked_at is not None)
    moved = kv.FileKey(replace(issuer0, not_before=issuer0.not_before - 1), None, None)
    with pytest.raises(kv.KeyringConflict):
        kv.merge({**keyring.keys, issuer0.kid: moved}, chain)


# ---------------------------------------------------------------- the CLI agrees on tampering
def test_the_cli_tells_the_same_errors_apart(
    story: Story, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An edited record (un-revoking a key) is a damaged file for the CLI too (exit 4), a wrong
    passphrase is exit 3. A record with a member keys 4.2 does not list is damaged even when
    sealed correctly (by this module): for the CLI and for this module. ``keys reseal`` of a
    hand-added station key gives a seal this module opens."""
    base = story.steps["earlier revoke"].file
    keyring = kv.open_keyring(base, STORY_PASSPHRASE)
    issuer0 = next(kid for kid, fk in keyring.keys.items() if fk.key.revoked_at is not None)

    def unrevoke(d: dict[str, Any]) -> None:
        entry = entry_of(d, issuer0)
        del entry["revoked_at"], entry["revocation_reason"]

    def add_station(d: dict[str, Any]) -> None:
        d["keys"].append(new_station_record("st-by-hand"))

    def annotate_and_seal(d: dict[str, Any]) -> None:
        entry = entry_of(d, issuer0)
        entry["note"] = '审计 "ok"\t\x01\x1fé\u2028/\\'
        entry["zz"] = {"\ue000": "a", "\U0001f600": ["b", 1, True, None]}
        d["records"] = kv.seal(keyring.file_key, b"", kv.records_aad(d["keys"]))

    files = {
        "unrevoked": edit(base, unrevoke),
        "wrong": base,
        "reseal": edit(base, add_station),
        "annotated": edit(base, annotate_and_seal),
    }
    dirs: dict[str, Path] = {}
    for name, data in files.items():
        d = tmp_path_factory.mktemp(f"cli-{name}")
        (d / "keys").mkdir(mode=0o700)
        (d / "keys" / "keyring.json").write_bytes(data)
        os.chmod(d / "keys" / "keyring.json", 0o600)
        dirs[name] = d
    fresh = tmp_path_factory.mktemp("cli-fresh") / "data"
    for name in ("unrevoked", "reseal"):
        with pytest.raises(kv.RecordsChanged):
            kv.open_keyring(files[name], STORY_PASSPHRASE)
    with pytest.raises(kv.Damaged, match="does not list"):
        kv.open_keyring(files["annotated"], STORY_PASSPHRASE)
    results = cli_many(
        [
            (["keys", "trust-list", "--data-dir", str(dirs["unrevoked"])], STORY_PASSPHRASE),
            (["keys", "trust-list", "--data-dir", str(dirs["wrong"])], "not the passphrase"),
            (["keys", "reseal", "--data-dir", str(dirs["reseal"])], STORY_PASSPHRASE),
            (["keys", "trust-list", "--data-dir", str(dirs["annotated"])], STORY_PASSPHRASE),
            (["keys", "init", "--data-dir", str(fresh)], STORY_PASSPHRASE),
        ]
    )
    (rc1, _, err1), (rc2, _, err2), (rc3, out3, err3), (rc4, out4, err4), (rc5, _, err5) = results
    assert (rc1, rc2, rc3, rc4, rc5) == (4, 3, 0, 4, 0), (err1, err2, err3, err4, err5)
    # keys 4.5: the CLI names the codes corrupt-key-file / wrong-passphrase
    assert "corrupt-key-file:" in err1
    assert "records were changed" in err1
    assert "wrong-passphrase:" in err2
    assert "records were changed" not in err2
    assert "corrupt-key-file:" in err4
    assert "does not know" in err4
    assert out4 == ""
    resealed_path = dirs["reseal"] / "keys" / "keyring.json"
    assert out3.strip() == f"sealed the 7 key records of {resealed_path}"
    resealed = kv.open_keyring(resealed_path.read_bytes(), STORY_PASSPHRASE)
    stations = {fk.key.scope for fk in resealed.keys.values() if fk.key.role == "station"}
    assert stations == {"st-1", "st-by-hand"}
    assert resealed.public.keys[issuer0].key.revoked_at == story.revoked_at - 60
    # keys 4.2/4.3: a keyring made by `keys init` has the default costs and opens
    created = kv.open_keyring((fresh / "keys" / "keyring.json").read_bytes(), STORY_PASSPHRASE)
    assert (created.public.opslimit, created.public.memlimit) == (3, 67108864)
    assert sorted(fk.key.role for fk in created.keys.values()) == ["api", "issuer", "log", "root"]
    assert all(fk.seed is not None for fk in created.keys.values())
    assert set(created.secrets) == {"vault-master", "member-pseudonym", "accounts"}
