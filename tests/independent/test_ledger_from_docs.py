"""The ledger's wire formats, verified from docs/formats.md and docs/keys.md alone: a real demo
server over HTTP, checked only by ``ledger_verifier``; the documents' worked examples; the
shared RFC 6962 known-answer vectors."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey

from tests.conftest import SHARED
from tests.independent import ledger_verifier as lv
from tests.independent.conftest import DemoServer

EXAMPLE_ORIGIN = "unionledger.localhost/ledger"
TEXT_PLAIN = "text/plain; charset=utf-8"
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Log:
    """What a verifier holds after reading the log: the pinned key string, the verified
    checkpoint and every entry it covers."""

    key: str
    note: bytes
    size: int
    root: bytes
    entries: list[bytes]
    leaves: list[bytes]


def log_key_from_trust_list(http: httpx.Client, server: DemoServer) -> str:
    """formats 5 "Obtaining the log key": the `log` entry of a trust list verified against the
    pinned root (keys 5.2), valid now, as a key string named after the origin."""
    now = _now()
    claims = lv.verify_trust_list(http.get("/v1/trust-list").text, [server.root_jwk], now)
    logs = [
        e
        for e in claims["keys"]
        if e["role"] == "log"
        and e["nbf"] <= now
        and ("exp" not in e or now < e["exp"])
        and ("revoked" not in e or now < e["revoked"])
    ]
    assert len(logs) == 1, logs
    return lv.note_verifier_key_from_jwk(server.origin, logs[0]["x"])


def _now() -> int:
    return int(time.time())


def fetch_entries(http: httpx.Client, start: int, end: int, page: int) -> list[bytes]:
    """formats 4: `GET /v1/log/entries`, half-open pages, one entry and `\\n` per line."""
    out: list[bytes] = []
    for s in range(start, end, page):
        e = min(end, s + page)
        answer = http.get("/v1/log/entries", params={"start": s, "end": e})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        assert answer.content.endswith(b"\n")
        lines = answer.content[:-1].split(b"\n")
        assert len(lines) == e - s
        out += lines
    return out


@pytest.fixture(scope="module")
def log(http: httpx.Client, demo_server: DemoServer) -> Log:
    key = log_key_from_trust_list(http, demo_server)
    note = http.get("/v1/log/checkpoint").content
    _, size, root, _ = lv.verify_checkpoint(note, key)
    entries = fetch_entries(http, 0, size, page=250)
    return Log(key, note, size, root, entries, [lv.leaf_hash(e) for e in entries])


# ---------------------------------------------------------------- the live server
def test_log_key_served_matches_trust_list(http: httpx.Client, log: Log) -> None:
    answer = http.get("/v1/log/public-key")
    assert answer.headers["content-type"] == TEXT_PLAIN
    assert answer.text == log.key + "\n"  # the key string and one newline
    name, _, kind, _ = lv.parse_verifier_key(answer.text)
    assert (name, kind) == (EXAMPLE_ORIGIN, 1)


def test_trust_list_as_documented(http: httpx.Client, demo_server: DemoServer) -> None:
    answer = http.get("/v1/trust-list")
    claims = lv.verify_trust_list(answer.text, [demo_server.root_jwk], _now())
    header = json.loads(lv.b64ud(answer.text.split(".")[0]))
    assert header == {
        "alg": "EdDSA",
        "kid": lv.jwk_thumbprint(demo_server.root_jwk["x"]),
        "typ": "unionledger-trust-list+jwt",
    }
    roles = {e["role"] for e in claims["keys"]}
    assert {"root", "log", "issuer", "station"} <= roles
    assert "api" not in roles  # keys 5.1: api keys are never published
    assert all(e.get("alg") == "EdDSA" and e.get("use") == "sig" for e in claims["keys"])
    order = [(e["role"], e.get("scope", ""), e["nbf"], e["kid"]) for e in claims["keys"]]
    assert order == sorted(order)  # keys 5.1: sorted by (role, scope, nbf, kid)


def test_trust_list_refused_when_not_pinned_or_altered(
    http: httpx.Client, demo_server: DemoServer
) -> None:
    token = http.get("/v1/trust-list").text
    other = SigningKey.generate()
    stranger = {"kty": "OKP", "crv": "Ed25519", "x": lv.b64ue(bytes(other.verify_key))}
    with pytest.raises(lv.Fail, match="trust-list-signature-invalid"):
        lv.verify_trust_list(token, [stranger], _now())
    with pytest.raises(lv.Fail, match="trust-list-signature-invalid"):
        lv.verify_trust_list(token, [], _now())
    header, claims, signature = token.split(".")
    body = json.loads(lv.b64ud(claims))
    body["exp"] += 86400
    forged = f"{header}.{lv.b64ue(json.dumps(body).encode())}.{signature}"
    with pytest.raises(lv.Fail, match="trust-list-signature-invalid"):
        lv.verify_trust_list(forged, [demo_server.root_jwk], _now())
    with pytest.raises(lv.Fail, match="trust-list-expired"):
        lv.verify_trust_list(token, [demo_server.root_jwk], body["exp"])


def test_checkpoint_signed_by_the_log_key(http: httpx.Client, log: Log) -> None:
    answer = http.get("/v1/log/checkpoint")
    assert answer.headers["content-type"] == TEXT_PLAIN
    origin, size, root, text = lv.verify_checkpoint(answer.content, log.key)
    assert origin == EXAMPLE_ORIGIN
    assert size >= log.size > 256  # the demo log spans more than one tile
    tlog = http.get("/tlog/checkpoint")
    assert tlog.headers["content-type"] == TEXT_PLAIN
    assert lv.verify_checkpoint(tlog.content, log.key)[1] >= log.size
    assert text == f"{origin}\n{size}\n{lv.b64e(root)}\n"  # our log writes no extension lines


def test_checkpoint_refused_when_signed_by_another_key(log: Log) -> None:
    text, signatures = lv.split_note(log.note)
    (name, kid, _), *_ = signatures
    impostor = SigningKey.generate()
    impostor_kid = lv.note_key_id(name, 1, bytes(impostor.verify_key))
    forged_sig = impostor.sign(text.encode()).signature
    # Another key under the log's name: its line is ignored, so the log key has not signed.
    forged = f"{text}\n\u2014 {name} {lv.b64e(impostor_kid + forged_sig)}\n".encode()
    with pytest.raises(lv.Fail, match="not signed by the log key"):
        lv.verify_checkpoint(forged, log.key)
    # The log's key id with another key's signature: a trusted line that fails rejects the note.
    spoofed = f"{text}\n\u2014 {name} {lv.b64e(kid + forged_sig)}\n".encode()
    with pytest.raises(lv.Fail, match="log signature invalid"):
        lv.verify_checkpoint(spoofed, log.key)
    # The genuine note, checked against the impostor's key string.
    impostor_key = lv.note_verifier_key_from_jwk(name, lv.b64ue(bytes(impostor.verify_key)))
    with pytest.raises(lv.Fail, match="not signed by the log key"):
        lv.verify_checkpoint(log.note, impostor_key)
    # A changed size or root breaks the genuine signature.
    altered = log.note.replace(f"\n{log.size}\n".encode(), f"\n{log.size + 1}\n".encode(), 1)
    with pytest.raises(lv.Fail, match="log signature invalid"):
        lv.verify_checkpoint(altered, log.key)


def test_every_entry_canonical_and_chained(log: Log) -> None:
    assert len(log.entries) == log.size
    last_hash, _ = lv.check_chain(log.entries)
    assert last_hash == hashlib.sha256(log.entries[-1]).digest()
    types = {lv.parse_entry(e)["type"] for e in log.entries}
    assert {"MemberEnrolled", "CredentialIssued"} <= types, types


def test_merkle_root_equals_the_checkpoint(log: Log) -> None:
    assert lv.mth(log.leaves) == log.root


def test_flipped_byte_in_an_entry_is_caught(log: Log) -> None:
    for index in (0, 1, log.size // 2, log.size - 2):
        entry = bytearray(log.entries[index])
        entry[len(entry) // 2] ^= 0x01
        tampered = [*log.entries[:index], bytes(entry), *log.entries[index + 1 :]]
        with pytest.raises(lv.Fail):
            lv.check_chain(tampered)
        assert lv.mth([lv.leaf_hash(e) for e in tampered]) != log.root
    # The last entry has no successor to chain to it: its digit changed stays canonical, but
    # the root gives it away.
    last = log.entries[-1]
    position = last.index(b'"index":') + len(b'"index":')
    bumped = last[:position] + re.sub(rb"^\d", b"9", last[position:], count=1)
    assert bumped != last
    with pytest.raises(lv.Fail, match="index"):
        lv.check_chain([*log.entries[:-1], bumped])
    assert lv.mth([*log.leaves[:-1], lv.leaf_hash(bumped)]) != log.root


def _hashes(answer: httpx.Response) -> tuple[dict[str, Any], list[bytes]]:
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body, [lv.b64d(h) for h in body["hashes"]]


def test_inclusion_proofs(http: httpx.Client, log: Log) -> None:
    n = log.size
    for tree_size in (n, 300, 257, 256, 3):
        root = lv.mth(log.leaves[:tree_size])
        for index in sorted({0, 1, 2, tree_size // 2, 255, 256, tree_size - 1}):
            if index >= tree_size:
                continue
            body, hashes = _hashes(
                http.get("/v1/log/proof/inclusion", params={"index": index, "tree_size": tree_size})
            )
            assert body == {"index": index, "tree_size": tree_size, "hashes": body["hashes"]}
            assert hashes == lv.inclusion_path(index, log.leaves[:tree_size])
            lv.verify_inclusion(index, tree_size, log.leaves[index], hashes, root)


def test_wrong_inclusion_proof_fails(http: httpx.Client, log: Log) -> None:
    index = 300
    _, hashes = _hashes(
        http.get("/v1/log/proof/inclusion", params={"index": index, "tree_size": log.size})
    )
    for k in range(len(hashes)):
        wrong = [*hashes]
        wrong[k] = bytes([wrong[k][0] ^ 0x80]) + wrong[k][1:]
        with pytest.raises(lv.Fail):
            lv.verify_inclusion(index, log.size, log.leaves[index], wrong, log.root)
    with pytest.raises(lv.Fail):  # the right path for another leaf
        lv.verify_inclusion(index, log.size, log.leaves[index + 1], hashes, log.root)
    with pytest.raises(lv.Fail):  # too long
        lv.verify_inclusion(index, log.size, log.leaves[index], [*hashes, hashes[0]], log.root)
    with pytest.raises(lv.Fail):  # too short
        lv.verify_inclusion(index, log.size, log.leaves[index], hashes[:-1], log.root)


def test_consistency_proofs(http: httpx.Client, log: Log) -> None:
    n = log.size
    for second in (n, 300):
        second_root = lv.mth(log.leaves[:second])
        for first in sorted({1, 2, 3, 7, 100, 255, 256, 257, second - 1, second}):
            body, hashes = _hashes(
                http.get("/v1/log/proof/consistency", params={"first": first, "second": second})
            )
            assert body == {"first": first, "second": second, "hashes": body["hashes"]}
            expected = lv.consistency_path(first, log.leaves[:second]) if first < second else []
            assert hashes == expected
            first_root = lv.mth(log.leaves[:first])
            lv.verify_consistency(first, second, first_root, second_root, hashes)
            if hashes:
                wrong = [hashes[0][::-1], *hashes[1:]]
                with pytest.raises(lv.Fail):
                    lv.verify_consistency(first, second, first_root, second_root, wrong)
                with pytest.raises(lv.Fail):  # against another first root
                    lv.verify_consistency(
                        first, second, lv.mth(log.leaves[1 : first + 1]), second_root, hashes
                    )


def test_out_of_range_is_a_problem(http: httpx.Client, log: Log) -> None:
    answer = http.get("/v1/log/proof/consistency", params={"first": 0, "second": log.size})
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"] == "/problems/out-of-range"
    answer = http.get("/v1/log/entries", params={"start": 0, "end": 1001})
    assert answer.status_code == 404
    assert answer.json()["type"] == "/problems/out-of-range"


def test_receipts(http: httpx.Client, log: Log) -> None:
    for index in (0, 7, 256, log.size - 1):
        answer = http.get(f"/v1/log/receipt/{index}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        got_index, entry, inclusion, note, layout = lv.parse_receipt_json(answer.content)
        assert layout, "formats 6: keys sorted, no whitespace, non-ASCII unescaped"
        assert (got_index, entry) == (index, log.entries[index])
        size, _ = lv.verify_receipt(got_index, entry, inclusion, note, log.key)
        assert size >= log.size
        tampered = entry.replace(b'"v":1', b'"v":2')
        assert tampered != entry
        with pytest.raises(lv.Fail, match="inclusion proof does not verify"):
            lv.verify_receipt(got_index, tampered, inclusion, note, log.key)
        if inclusion:
            with pytest.raises(lv.Fail):
                lv.verify_receipt(got_index, entry, [*inclusion[::-1], bytes(32)], note, log.key)


def test_tiles_and_entry_bundles(http: httpx.Client, log: Log) -> None:
    fetched: dict[tuple[int, int, int], bytes] = {}
    tiles = lv.tiles_for_size(log.size)
    assert (0, 0, 256) in tiles
    assert (1, 0, log.size // 256) in tiles
    for level, n, width in tiles:
        answer = http.get("/tlog/" + lv.tile_path(level, n, width))
        assert answer.status_code == 200, (level, n, width)
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers.get("cache-control") == (IMMUTABLE if width == 256 else None)
        data = answer.content
        assert len(data) == 32 * width
        for k in range(width):
            a, b = (n * 256 + k) * 256**level, (n * 256 + k + 1) * 256**level
            assert data[32 * k : 32 * k + 32] == lv.mth(log.leaves[a:b]), (level, n, k)
        fetched[level, n, width] = data
        if level == 0:
            bundle = http.get("/tlog/" + lv.entries_path(n, width))
            assert bundle.status_code == 200
            assert bundle.headers.get("cache-control") == (IMMUTABLE if width == 256 else None)
            assert lv.decode_entry_bundle(bundle.content) == log.entries[n * 256 : n * 256 + width]
    assert lv.root_from_tiles(log.size, lambda lvl, n, w: fetched[lvl, n, w]) == log.root
    # formats 7: `.p/W` gets the first W hashes also once the tile is full; an entry bundle
    # is served when its last entry exists.
    partial = http.get("/tlog/tile/0/000.p/5")
    assert partial.status_code == 200
    assert partial.content == fetched[0, 0, 256][: 32 * 5]
    assert partial.headers.get("cache-control") is None
    bundle = http.get("/tlog/tile/entries/000.p/5")
    assert bundle.status_code == 200
    assert lv.decode_entry_bundle(bundle.content) == log.entries[:5]
    # formats 7: only the canonical spelling is served.
    for path in ("tile/0/0", "tile/0/00", "tile/00/000", "tile/0/000.p/256", "tile/0/001.p/0"):
        assert http.get("/tlog/" + path).status_code == 404, path


# ---------------------------------------------------------------- the documents' examples
E0 = (
    b'{"actor":"official:310104","body":{"member":"m-7f3a9c","union":"310104"},"index":0,'
    b'"prev":"0000000000000000000000000000000000000000000000000000000000000000",'
    b'"time":"2026-11-25T08:46:12.123456Z","type":"MemberJoined","v":1}'
)
DOC_NOTE = (
    "unionledger.localhost/ledger\n3\n2Lt+65r3kSNCXd0dpjPoNg7A1VrqmIvGAk6RNjMRh0E=\n\n"
    "\u2014 unionledger.localhost/ledger Xv27AGZ50deCw7P8xPTup2bBgR/cA3XPiOnymqCR7B24c5gZMNK9wBPzt"
    "mGmM+HRKANOQswop8eb/e4t3+5BBon7Hw0=\n"
).encode()
DOC_KEY = "unionledger.localhost/ledger+5efdbb00+AQ7OkcAamR/pQZFBGNyeMqFRXjrq0MNmRn8bll9JkqwS"


def doc_entries() -> list[bytes]:
    """formats 2, worked example: three entries built by the rules of the section."""

    def entry(
        index: int, time: str, kind: str, actor: str, body: dict[str, Any], prev: bytes
    ) -> bytes:
        value = {"v": 1, "index": index, "time": time, "type": kind, "actor": actor, "body": body}
        return lv.canonical_bytes({**value, "prev": prev.hex()})

    station = "station:310104-0007"
    e0 = entry(0, "2026-11-25T08:46:12.123456Z", "MemberJoined", "official:310104",
               {"member": "m-7f3a9c", "union": "310104"}, bytes(32))  # fmt: skip
    e1 = entry(1, "2026-11-25T08:46:12.500000Z", "RedemptionRecorded", station,
               {"amount_fen": 1500, "member": "m-7f3a9c", "program": "p-cool-2026"},
               hashlib.sha256(e0).digest())  # fmt: skip
    e2 = entry(2, "2026-11-25T08:47:03.000001Z", "RedemptionRecorded", station,
               {"amount_fen": 0, "member": "m-41c2d0", "program": "p-water"},
               hashlib.sha256(e1).digest())  # fmt: skip
    return [e0, e1, e2]


def test_canonical_bytes_examples() -> None:
    value = {"note": '驿站 "A"\n', "amount_fen": 1500, "tags": [True, None, -7], "Zone": {}}
    encoded = lv.canonical_bytes(value)
    assert len(encoded) == 75
    assert (
        encoded
        == '{"Zone":{},"amount_fen":1500,"note":"驿站 \\"A\\"\\n","tags":[true,null,-7]}'.encode()
    )
    assert lv.canonical_bytes({"c": "\x01\x1f\x7f\u2028/\\"}).hex() == (
        "7b2263223a225c75303030315c75303031667fe280a82f5c5c227d"
    )
    assert lv.canonical_bytes({"\ue000": 1, "\U0001f600": 2, "a": 3}).hex() == (
        "7b2261223a332c22f09f9880223a322c22ee8080223a317d"
    )
    refused = [b'{"a":1,"a":1}', b'{"a":1, "b":2}', b'{"b":1,"a":2}', b'{"a":1.0}', b'{"a":1e3}',
               b'"\\u0041"', b'"\\/"', b'{"a":"\\u001F"}', b"-0", b'"\\ud800"']  # fmt: skip
    for text in refused:
        with pytest.raises(lv.Fail):
            lv.parse_canonical(text)


def test_entry_and_merkle_examples() -> None:
    e0, e1, e2 = doc_entries()
    assert e0 == E0
    assert [len(e) for e in (e0, e1, e2)] == [222, 257, 250]
    hashes = [(hashlib.sha256(e).hexdigest(), lv.leaf_hash(e).hex()) for e in (e0, e1, e2)]
    assert hashes == [
        (
            "78f2fcb63ae763920992075c502d3dadc747ca05dd34dddc30f0e5cc24effd75",
            "da5128a8a7da2ffa769623ac4c49dc3d7c6d88ffaa0f0ec321b4ddefdefdd3eb",
        ),
        (
            "81500472bb781b353b65ea9b315d108efe3fd300e372b82183de02cd482e62ea",
            "8e13909f13d5c7ba97dc16091ef9927f90503953a4063ff6dc100fcecf46dc89",
        ),
        (
            "169b3e9a220531597a8b1bf93cd66b0de1f7c4d12036bd58beea6dcf8e5122fe",
            "1c7abce7502c081fd53e68f72442676968f44d08cadf9ce7949bfbab4899ea8f",
        ),
    ]
    lv.check_chain([e0, e1, e2])
    leaves = [lv.leaf_hash(e) for e in (e0, e1, e2)]
    n01, r3 = lv.node_hash(leaves[0], leaves[1]), lv.mth(leaves)
    assert n01.hex() == "b71be0492e3bbb548fefbab1c10e924121fc63933de03e5964735df356caf523"
    assert lv.b64e(r3) == "2Lt+65r3kSNCXd0dpjPoNg7A1VrqmIvGAk6RNjMRh0E="
    assert [lv.inclusion_path(i, leaves) for i in range(3)] == [
        [leaves[1], leaves[2]],
        [leaves[0], leaves[2]],
        [n01],
    ]
    assert lv.consistency_path(1, leaves) == [leaves[1], leaves[2]]
    assert lv.consistency_path(2, leaves) == [leaves[2]]
    lv.verify_consistency(2, 3, n01, r3, [leaves[2]])
    assert lv.mth([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    tile = b"".join(leaves)
    assert lv.root_from_tiles(3, lambda level, n, w: tile[: 32 * w]) == r3
    bundle = lv.encode_entry_bundle([e0, e1, e2])
    assert len(bundle) == 735
    assert bundle[:4].hex() == "00de7b22"
    assert lv.decode_entry_bundle(bundle) == [e0, e1, e2]


def test_checkpoint_and_receipt_examples() -> None:
    seed = hashlib.sha256(b"unionledger docs example log key").digest()
    signer = SigningKey(seed)
    public = bytes(signer.verify_key)
    assert public.hex() == "0ece91c01a991fe941914118dc9e32a1515e3aead0c366467f1b965f4992ac12"
    kid = lv.note_key_id(EXAMPLE_ORIGIN, 1, public)
    assert kid.hex() == "5efdbb00"
    assert lv.note_verifier_key_from_jwk(EXAMPLE_ORIGIN, lv.b64ue(public)) == DOC_KEY
    text = f"{EXAMPLE_ORIGIN}\n3\n2Lt+65r3kSNCXd0dpjPoNg7A1VrqmIvGAk6RNjMRh0E=\n"
    signature = signer.sign(text.encode()).signature
    assert f"{text}\n\u2014 {EXAMPLE_ORIGIN} {lv.b64e(kid + signature)}\n".encode() == DOC_NOTE
    assert len(DOC_NOTE) == 203
    _, size, root, _ = lv.verify_checkpoint(DOC_NOTE, DOC_KEY)
    assert size == 3
    # The witness cosignature of formats 5.
    witness = SigningKey(hashlib.sha256(b"unionledger docs example witness key").digest())
    w_name = "witness.unionledger.localhost/310000"
    w_public = bytes(witness.verify_key)
    w_kid = lv.note_key_id(w_name, 4, w_public)
    w_key = f"{w_name}+{w_kid.hex()}+{lv.b64e(bytes([4]) + w_public)}"
    assert w_key == f"{w_name}+9cb99985+BJUkvj7RTx3hmCV5xXs+xzGgeBcQnKPM9tohjbqS/R2f"
    when = 1795596372
    cosig = witness.sign(b"cosignature/v1\ntime %d\n" % when + text.encode()).signature
    line = f"\u2014 {w_name} {lv.b64e(w_kid + struct.pack('>Q', when) + cosig)}\n"
    assert line == (
        "\u2014 witness.unionledger.localhost/310000 nLmZhQAAAABrBqBUVCZF7sz54ORPMSqQXtOENqXG/dkuw"
        "KhBuFbyWOyVFz5bfzoGQfLncBbrIwnJ/luL2aSPCec9QVAvP1UODPR+Bg==\n"
    )
    lv.verify_checkpoint(DOC_NOTE + line.encode(), DOC_KEY, witnesses=[w_key], quorum=1)
    with pytest.raises(lv.Fail, match="quorum"):
        lv.verify_checkpoint(DOC_NOTE, DOC_KEY, witnesses=[w_key], quorum=1)
    # formats 6: the receipt of entry 1, and the same as tlog-proof@v1.
    _, e1, _ = doc_entries()
    leaves = [lv.leaf_hash(e) for e in doc_entries()]
    receipt = {
        "checkpoint": DOC_NOTE.decode(),
        "entry": lv.b64e(e1),
        "format": "unionledger-receipt/1",
        "inclusion": [lv.b64e(leaves[0]), lv.b64e(leaves[2])],
        "index": 1,
    }
    data = json.dumps(receipt, separators=(",", ":"), ensure_ascii=False).encode()
    index, entry, inclusion, note, layout = lv.parse_receipt_json(data)
    assert layout
    assert lv.verify_receipt(index, entry, inclusion, note, DOC_KEY) == (3, root)
    proof = (
        b"c2sp.org/tlog-proof@v1\nindex 1\n2lEoqKfaL/p2liOsTEncPXxtiP+qDw7DIbTd79790+s=\n"
        b"HHq851AsCB/VPmj3JEJnaWj0TQjK35znlJv7q0iZ6o8=\n\n"
    ) + DOC_NOTE
    assert lv.parse_tlog_proof(proof) == (1, inclusion, DOC_NOTE)


def test_tile_path_and_key_id_examples() -> None:
    assert [lv.encode_index(n) for n in (5, 1000, 1234067)] == ["005", "x001/000", "x001/x234/067"]
    tiles = lv.tiles_for_size(70000)
    assert len(tiles) == 277
    assert tiles[272:] == [(0, 272, 256), (0, 273, 112), (1, 0, 256), (1, 1, 17), (2, 0, 1)]
    assert lv.tile_path(0, 273, 112) == "tile/0/273.p/112"
    assert lv.entries_path(272) == "tile/entries/272"
    # keys 2: the RFC 8037 A.3 thumbprint.
    assert lv.jwk_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo") == (
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )


# ---------------------------------------------------------------- shared known-answer vectors
MERKLE = SHARED / "vectors" / "merkle"


def _b64_or_empty(value: str | None) -> bytes:
    return lv.b64d(value) if value is not None else b""


def _judge(path: Path) -> bool:
    """True when the independent verifier accepts the vector."""
    case = json.loads(path.read_text())
    try:
        if "inclusion" in path.parts:
            lv.verify_inclusion(
                case["leafIdx"],
                case["treeSize"],
                _b64_or_empty(case["leafHash"]),
                [_b64_or_empty(p) for p in case["proof"] or []],
                _b64_or_empty(case["root"]),
            )
        else:
            lv.verify_consistency(
                case["size1"],
                case["size2"],
                _b64_or_empty(case["root1"]),
                _b64_or_empty(case["root2"]),
                [_b64_or_empty(p) for p in case["proof"] or []],
            )
    except lv.Fail:
        return False
    return True


def test_merkle_known_answer_vectors() -> None:
    cases = sorted(MERKLE.rglob("*.json"))
    assert len(cases) > 150, f"vectors missing under {MERKLE}"
    kinds = {p.relative_to(MERKLE).parts[0] for p in cases}
    assert kinds == {"inclusion", "consistency"}
    wrong = [
        str(p.relative_to(MERKLE))
        for p in cases
        if _judge(p) == json.loads(p.read_text())["wantErr"]
    ]
    assert not wrong, wrong
    assert any(json.loads(p.read_text())["wantErr"] for p in cases)
    assert any(not json.loads(p.read_text())["wantErr"] for p in cases)


def test_merkle_root_vectors_of_the_readme() -> None:
    readme = (MERKLE / "README.md").read_text()
    listing = re.search(r"leaves (.*?); roots for n = 0\.\.8:", readme, re.S)
    assert listing is not None, "the README's root vectors moved"
    leaves = [bytes.fromhex(x.strip('"')) for x in re.findall(r"`([^`]*)`", listing.group(1))]
    roots = re.findall(r"\b[0-9a-f]{64}\b", readme)
    assert len(leaves) == 8
    assert len(roots) == 9
    hashes = [lv.leaf_hash(x) for x in leaves]
    assert [lv.mth(hashes[:n]).hex() for n in range(9)] == roots
