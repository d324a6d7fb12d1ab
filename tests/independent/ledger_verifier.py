"""An independent verifier of UnionLedger's ledger formats, written from docs/formats.md and
docs/keys.md only (the rule of this package: see ``tests/independent/__init__.py``).

It imports nothing of the repository: only the standard library and pynacl (a dependency in
pyproject.toml) for Ed25519. Each function names the section of the document it implements;
"formats N" is docs/formats.md section N, "keys N" is docs/keys.md section N.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

__all__ = [
    "Fail",
    "b64d",
    "b64e",
    "canonical_bytes",
    "check_chain",
    "consistency_path",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "encode_index",
    "entries_path",
    "inclusion_path",
    "jwk_thumbprint",
    "leaf_hash",
    "mth",
    "node_hash",
    "note_key_id",
    "note_verifier_key_from_jwk",
    "parse_canonical",
    "parse_checkpoint_text",
    "parse_entry",
    "parse_receipt_json",
    "parse_tlog_proof",
    "parse_verifier_key",
    "root_from_tiles",
    "split_note",
    "tile_path",
    "tiles_for_size",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_receipt",
    "verify_trust_list",
]


class Fail(Exception):
    """Any verification failure."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------- formats: conventions
_B64STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64d(text: object) -> bytes:
    """Strict standard base64 (formats, conventions): one accepted encoding per byte string."""
    if not isinstance(text, str) or not _B64STD.fullmatch(text) or len(text) % 4:
        raise Fail(f"bad base64 {text!r}")
    raw = base64.b64decode(text, validate=True)
    if b64e(raw) != text:
        raise Fail(f"non-canonical base64 {text!r}")
    return raw


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64ud(text: object) -> bytes:
    """Strict base64url without padding (keys.md conventions)."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise Fail(f"bad base64url {text!r}")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64ue(raw) != text:
        raise Fail(f"non-canonical base64url {text!r}")
    return raw


def b64ue(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------- formats 1: canonical bytes
MAX_SAFE = 2**53 - 1
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _encode_string(text: str) -> str:
    """formats 1, rule 4: exactly these escapes, lowercase \\u00xx, everything else as itself."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise Fail("lone surrogate")
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16_key(key: str) -> bytes:
    """formats 1, rule 2: big-endian UTF-16 bytes compare like code-unit sequences."""
    return key.encode("utf-16-be", "surrogatepass")


def _encode(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        if not -MAX_SAFE <= value <= MAX_SAFE:
            raise Fail("integer out of range")
        return str(value)
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, list):
        return "[" + ",".join(_encode(x) for x in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise Fail("non-string key")
        ordered = sorted(value, key=_utf16_key)
        return "{" + ",".join(_encode_string(k) + ":" + _encode(value[k]) for k in ordered) + "}"
    raise Fail(f"type not allowed: {type(value).__name__}")


def canonical_bytes(value: object) -> bytes:
    """formats 1: the canonical bytes (the RFC 8785 subset) of a JSON value."""
    return _encode(value).encode("utf-8")


def _refuse_number(text: str) -> Any:
    raise Fail(f"number not allowed: {text}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Fail("duplicate key")
        out[key] = value
    return out


def loads_strict(data: bytes) -> Any:
    """JSON with no duplicate members and no floats, NaN or infinity."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Fail("not UTF-8") from e
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_refuse_number,
            parse_constant=_refuse_number,
        )
    except json.JSONDecodeError as e:
        raise Fail(f"not JSON: {e}") from e


def parse_canonical(data: bytes) -> Any:
    """formats 1, "Parsing": accept only bytes equal to the canonical bytes of their value."""
    value = loads_strict(data)
    if canonical_bytes(value) != data:
        raise Fail("not canonical")
    return value


# ---------------------------------------------------------------- formats 2: entries
ENTRY_MEMBERS = {"v", "index", "time", "type", "actor", "body", "prev"}
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.[0-9]{6}Z")
_TYPE = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_ENTRY = 65535


def parse_entry(data: bytes) -> dict[str, Any]:
    """formats 2: the seven members and their rules (readers' checks of `time`)."""
    if len(data) > MAX_ENTRY:
        raise Fail("entry too long")
    entry = parse_canonical(data)
    if not isinstance(entry, dict) or set(entry) != ENTRY_MEMBERS:
        raise Fail("entry members")
    if not is_int(entry["v"]) or entry["v"] != 1:
        raise Fail("v")
    if not is_int(entry["index"]) or entry["index"] < 0:
        raise Fail("index")
    time = entry["time"]
    match = _TIME.fullmatch(time) if isinstance(time, str) else None
    if match is None:
        raise Fail("time form")
    month, day, hour, minute, second = (int(match.group(i)) for i in range(2, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 59):
        raise Fail("time range")
    if not isinstance(entry["type"], str) or not _TYPE.fullmatch(entry["type"]):
        raise Fail("type")
    if not isinstance(entry["actor"], str) or not 1 <= len(entry["actor"]) <= 128:
        raise Fail("actor")
    if not isinstance(entry["body"], dict):
        raise Fail("body")
    if not isinstance(entry["prev"], str) or not _HEX64.fullmatch(entry["prev"]):
        raise Fail("prev")
    return entry


def check_chain(
    entries: Sequence[bytes],
    start: int = 0,
    prev_hash: bytes | None = None,
    prev_time: str | None = None,
) -> tuple[bytes | None, str | None]:
    """formats 2, "Chain rules": entries `start ..`; `prev_hash` is entry `start - 1`'s hash
    (64 zeros for entry 0). Returns the last entry's hash and time."""
    if start == 0:
        prev_hash = bytes(32)
    for k, data in enumerate(entries):
        i = start + k
        entry = parse_entry(data)
        if entry["index"] != i:
            raise Fail(f"entry {i}: index {entry['index']}")
        if prev_hash is not None and entry["prev"] != prev_hash.hex():
            raise Fail(f"entry {i}: prev mismatch")
        if prev_time is not None and entry["time"] < prev_time:
            raise Fail(f"entry {i}: time goes backwards")
        prev_hash, prev_time = sha256(data), entry["time"]
    return prev_hash, prev_time


def leaf_hash(data: bytes) -> bytes:
    """formats 2 and 3: SHA-256(0x00 ‖ e)."""
    return sha256(b"\x00" + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    """formats 3: SHA-256(0x01 ‖ left ‖ right)."""
    return sha256(b"\x01" + left + right)


# ---------------------------------------------------------------- formats 3: Merkle tree
def _split(n: int) -> int:
    """The largest power of two < n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: Sequence[bytes]) -> bytes:
    """formats 3: MTH over leaf hashes (RFC 9162 2.1.1)."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def inclusion_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """formats 3: PATH(m, D[0:n]) of RFC 9162 2.1.3.1, over leaf hashes."""
    n = len(leaves)
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return [*inclusion_path(m, leaves[:k]), mth(leaves[k:])]
    return [*inclusion_path(m - k, leaves[k:]), mth(leaves[:k])]


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [mth(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def consistency_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """formats 3: PROOF(m, D[0:n]) of RFC 9162 2.1.4.1, over leaf hashes."""
    return _subproof(m, leaves, True)


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """formats 3, "Verifying an inclusion proof", steps 1-5."""
    if leaf_index >= tree_size:
        raise Fail("leaf index >= size")
    if any(len(x) != 32 for x in [leaf, root, *path]):
        raise Fail("hash not 32 bytes")
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            raise Fail("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if not (sn == 0 and r == root):
        raise Fail("inclusion proof does not verify")


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: Sequence[bytes]
) -> None:
    """formats 3, "Verifying a consistency proof", steps 1-7, and the paragraph after them:
    `first == 0` is refused; `first == second` needs an empty proof and equal roots, whatever
    their length; otherwise every hash is 32 bytes."""
    if first == 0:
        raise Fail("first == 0")
    if first == second:
        if path or first_hash != second_hash:
            raise Fail("equal sizes need an empty proof and equal roots")
        return
    if first > second:
        raise Fail("first > second")
    if any(len(x) != 32 for x in [first_hash, second_hash, *path]):
        raise Fail("hash not 32 bytes")
    if not path:
        raise Fail("empty consistency proof")
    hashes = list(path)
    if first & (first - 1) == 0:
        hashes = [first_hash, *hashes]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            raise Fail("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if not (fr == first_hash and sr == second_hash and sn == 0):
        raise Fail("consistency proof does not verify")


# ---------------------------------------------------------------- formats 5: signed notes
EM_DASH = "\u2014"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _check_name(name: str) -> None:
    """formats 5, "Origin and key name"."""
    if not name or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name):
        raise Fail(f"bad key name {name!r}")


def note_key_id(name: str, kind: int, public_key: bytes) -> bytes:
    """formats 5, "Key id": SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]."""
    return sha256(name.encode() + b"\n" + bytes([kind]) + public_key)[:4]


def parse_verifier_key(text: str) -> tuple[str, bytes, int, bytes]:
    """formats 5, "Verifier key string": (name, key id, type, public key)."""
    parts = text.strip("\n").split("+", 2)  # the base64 may itself contain "+"
    if len(parts) != 3:
        raise Fail("verifier key: need name+hash+key")
    name, kid_hex, key_b64 = parts
    _check_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", kid_hex):
        raise Fail("verifier key: key id not 8 hex digits")
    raw = b64d(key_b64)
    if len(raw) != 33:
        raise Fail("verifier key: length")
    kind, public_key = raw[0], raw[1:]
    if note_key_id(name, kind, public_key).hex() != kid_hex:
        raise Fail("verifier key: key id mismatch")
    return name, bytes.fromhex(kid_hex), kind, public_key


def note_verifier_key_from_jwk(origin: str, x: str) -> str:
    """formats 5, "Obtaining the log key": the key string of a trust list's `log` entry."""
    public_key = b64ud(x)
    return f"{origin}+{note_key_id(origin, 1, public_key).hex()}+{b64e(bytes([1]) + public_key)}"


def split_note(note: bytes) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """formats 5: the note text (ending at the last blank line, final newline included) and its
    signature lines as (name, key id, signature)."""
    try:
        text = note.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Fail("note not UTF-8") from e
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise Fail("control character in note")
    cut = text.rfind("\n\n")
    if cut < 0:
        raise Fail("no blank line")
    body, signatures = text[: cut + 1], text[cut + 2 :]
    if not signatures.endswith("\n"):
        raise Fail("signature block must end in a newline")
    lines = signatures[:-1].split("\n")
    if not lines or len(lines) > 100:
        raise Fail("signature line count")
    out = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise Fail(f"bad signature line {line!r}")
        name, space, sig_b64 = line[2:].rpartition(" ")
        if not space:
            raise Fail("bad signature line")
        _check_name(name)
        raw = b64d(sig_b64)
        if len(raw) < 5:
            raise Fail("short signature")
        out.append((name, raw[:4], raw[4:]))
    return body, out


def parse_checkpoint_text(text: str) -> tuple[str, int, bytes, list[str]]:
    """formats 5: origin, size, root and extension lines, parsed strictly (re-encoding gives
    the same text)."""
    lines = text.split("\n")
    if lines[-1] != "":
        raise Fail("checkpoint text must end in a newline")
    lines = lines[:-1]
    if len(lines) < 3:
        raise Fail("checkpoint needs 3 lines")
    origin, size_text, root_text = lines[:3]
    extensions = lines[3:]
    if not all(extensions):
        raise Fail("empty extension line")
    if not _DECIMAL.fullmatch(size_text) or int(size_text) > 2**64 - 1:
        raise Fail("bad size")
    root = b64d(root_text)
    if len(root) != 32:
        raise Fail("root not 32 bytes")
    if "\n".join([origin, str(int(size_text)), b64e(root), *extensions]) + "\n" != text:
        raise Fail("checkpoint not strict")
    return origin, int(size_text), root, extensions


def verify_checkpoint(
    note: bytes,
    log_key: str,
    origin: str | None = None,
    witnesses: Iterable[str] = (),
    quorum: int = 0,
) -> tuple[str, int, bytes, str]:
    """formats 5, "Verification" and "Witness cosignatures": returns (origin, size, root, text)."""
    name, kid, kind, public_key = parse_verifier_key(log_key)
    if kind != 1:
        raise Fail("log key must be of type 0x01")
    text, signatures = split_note(note)
    witness_keys = [parse_verifier_key(w) for w in witnesses]
    signed = False
    cosigned: set[str] = set()
    for sig_name, sig_kid, sig in signatures:
        if (sig_name, sig_kid) == (name, kid):
            if len(sig) != 64:
                raise Fail("log signature length")
            try:
                VerifyKey(public_key).verify(text.encode(), sig)
            except BadSignatureError as e:
                raise Fail("log signature invalid") from e
            signed = True
        for w_name, w_kid, w_kind, w_key in witness_keys:
            if (sig_name, sig_kid) == (w_name, w_kid) and w_kind == 4:
                if len(sig) != 72:
                    raise Fail("cosignature length")
                (when,) = struct.unpack(">Q", sig[:8])
                message = b"cosignature/v1\n" + b"time %d\n" % when + text.encode()
                try:
                    VerifyKey(w_key).verify(message, sig[8:])
                except BadSignatureError as e:
                    raise Fail("cosignature invalid") from e
                cosigned.add(w_name)
    if not signed:
        raise Fail("not signed by the log key")
    got_origin, size, root, _ = parse_checkpoint_text(text)
    if got_origin != (origin if origin is not None else name):
        raise Fail(f"unexpected origin {got_origin!r}")
    if len(cosigned) < quorum:
        raise Fail("witness quorum not reached")
    return got_origin, size, root, text


# ---------------------------------------------------------------- formats 6: receipts
RECEIPT_MEMBERS = {"checkpoint", "entry", "format", "inclusion", "index"}


def parse_receipt_json(data: bytes) -> tuple[int, bytes, list[bytes], bytes, bool]:
    """formats 6, JSON `unionledger-receipt/1`: (index, entry, inclusion, checkpoint note,
    whether the bytes are in the documented layout: keys sorted, no whitespace, raw UTF-8)."""
    receipt = loads_strict(data)
    if not isinstance(receipt, dict) or set(receipt) != RECEIPT_MEMBERS:
        raise Fail("receipt members")
    if receipt["format"] != "unionledger-receipt/1":
        raise Fail("receipt format")
    index = receipt["index"]
    if not is_int(index) or not 0 <= index <= 2**64 - 2:
        raise Fail("receipt index")
    if not isinstance(receipt["inclusion"], list) or len(receipt["inclusion"]) > 64:
        raise Fail("inclusion")
    inclusion = [b64d(x) for x in receipt["inclusion"]]
    if any(len(x) != 32 for x in inclusion):
        raise Fail("inclusion hash length")
    if not isinstance(receipt["checkpoint"], str):
        raise Fail("checkpoint")
    note = receipt["checkpoint"].encode()
    split_note(note)
    layout = json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return index, b64d(receipt["entry"]), inclusion, note, layout.encode() == data


def parse_tlog_proof(data: bytes) -> tuple[int, list[bytes], bytes]:
    """formats 6, C2SP `tlog-proof@v1` (no `extra` line): (index, inclusion, checkpoint note)."""
    text = data.decode("utf-8")
    header, _, rest = text.partition("\n")
    if header != "c2sp.org/tlog-proof@v1":
        raise Fail("tlog-proof header")
    lines = []
    while True:
        line, sep, rest = rest.partition("\n")
        if not sep:
            raise Fail("truncated tlog-proof")
        if line == "":
            break
        lines.append(line)
    if not lines or not lines[0].startswith("index "):
        raise Fail("tlog-proof: an index line must come first")
    index_text = lines[0][len("index ") :]
    if not _DECIMAL.fullmatch(index_text):
        raise Fail("tlog-proof index")
    return int(index_text), [b64d(x) for x in lines[1:]], rest.encode()


def verify_receipt(
    index: int, entry: bytes, inclusion: Sequence[bytes], note: bytes, log_key: str
) -> tuple[int, bytes]:
    """formats 6, "Verification" steps 1-3, then (`verify_entry_receipt`) the entry parses and
    its `index` equals the receipt's. Returns the checkpoint's (size, root)."""
    _, size, root, _ = verify_checkpoint(note, log_key)
    if index >= size:
        raise Fail("index >= size")
    verify_inclusion(index, size, leaf_hash(entry), inclusion, root)
    if parse_entry(entry)["index"] != index:
        raise Fail("entry index != receipt index")
    return size, root


# ---------------------------------------------------------------- formats 7: tiles
def encode_index(n: int) -> str:
    """formats 7: zero-padded groups of three digits, all but the last prefixed with `x`."""
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def tile_path(level: int, n: int, width: int = 256) -> str:
    path = f"tile/{level}/{encode_index(n)}"
    return path if width == 256 else f"{path}.p/{width}"


def entries_path(n: int, width: int = 256) -> str:
    path = f"tile/entries/{encode_index(n)}"
    return path if width == 256 else f"{path}.p/{width}"


def tiles_for_size(size: int) -> list[tuple[int, int, int]]:
    """formats 7, "Which tiles exist": (level, index, width) of every hash tile."""
    out: list[tuple[int, int, int]] = []
    level = 0
    while count := size // 256**level:
        out.extend((level, n, 256) for n in range(count // 256))
        if count % 256:
            out.append((level, count // 256, count % 256))
        level += 1
    return out


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """formats 7, "Entry bundles": big-endian uint16 length, then the entry bytes."""
    out: list[bytes] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise Fail("bundle truncated")
        (n,) = struct.unpack(">H", data[i : i + 2])
        if i + 2 + n > len(data):
            raise Fail("bundle truncated")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(e)) + e for e in entries)


def root_from_tiles(size: int, get_tile: Callable[[int, int, int], bytes]) -> bytes:
    """formats 7, "Deriving any subtree hash": the root of the first `size` leaves from hash
    tiles only; `get_tile(level, index, width)` returns a tile's bytes."""
    cache: dict[tuple[int, int], bytes] = {}

    def tile(level: int, n: int) -> bytes:
        count = size // 256**level
        width = 256 if count // 256 > n else count % 256
        if (level, n) not in cache:
            cache[level, n] = get_tile(level, n, width)
        return cache[level, n]

    def perfect(height: int, j: int) -> bytes:  # the perfect subtree of height h, index j
        level, r = divmod(height, 8)
        pos = j * 2**r
        data = tile(level, pos // 256)
        offset = pos % 256
        hashes = [data[32 * (offset + i) : 32 * (offset + i + 1)] for i in range(2**r)]
        if any(len(h) != 32 for h in hashes):
            raise Fail("tile too short")
        return mth(hashes)

    def subtree(start: int, n: int) -> bytes:  # MTH(D[start:start+n])
        if n == 0:
            return sha256(b"")
        if n & (n - 1) == 0 and start % n == 0:
            return perfect(n.bit_length() - 1, start // n)
        k = _split(n)
        return node_hash(subtree(start, k), subtree(start + k, n - k))

    return subtree(0, size)


# ---------------------------------------------------------------- keys 2: key ids
def jwk_thumbprint(x: str) -> str:
    """keys 2: the RFC 7638 thumbprint of an Ed25519 public JWK."""
    members = '{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}'
    return b64ue(sha256(members.encode()))


# ---------------------------------------------------------------- keys 5.2: the trust list
ROLES = {"root", "log", "issuer", "station", "api"}
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _check_trust_entry(entry: object, seen: set[str]) -> None:
    """keys 5.2 step 7."""
    if not isinstance(entry, dict):
        raise Fail("trust-list-invalid: entry not an object")
    if entry.get("alg", "EdDSA") != "EdDSA" or entry.get("kty") != "OKP":
        raise Fail("trust-list-invalid: alg/kty")
    if entry.get("crv") != "Ed25519" or "d" in entry:
        raise Fail("trust-list-invalid: crv/d")
    if len(b64ud(entry.get("x"))) != 32 or jwk_thumbprint(entry["x"]) != entry.get("kid"):
        raise Fail("trust-list-invalid: x/kid")
    if entry.get("role") not in ROLES or not is_int(entry.get("nbf")):
        raise Fail("trust-list-invalid: role/nbf")
    if "exp" in entry and (not is_int(entry["exp"]) or entry["exp"] <= entry["nbf"]):
        raise Fail("trust-list-invalid: exp")
    scoped = entry["role"] in ("issuer", "station")
    if scoped != ("scope" in entry):
        raise Fail("trust-list-invalid: scope presence")
    if scoped and not (isinstance(entry["scope"], str) and _SCOPE.fullmatch(entry["scope"])):
        raise Fail("trust-list-invalid: scope")
    if "revoked" in entry and not is_int(entry["revoked"]):
        raise Fail("trust-list-invalid: revoked")
    if entry["kid"] in seen:
        raise Fail("trust-list-invalid: duplicate kid")
    seen.add(entry["kid"])


def verify_trust_list(token: str, pinned_roots: Sequence[dict[str, Any]], now: int) -> Any:
    """keys 5.2 steps 1-8: returns the claims."""
    if not pinned_roots:
        raise Fail("trust-list-signature-invalid: no pinned root")
    parts = token.split(".")
    if len(parts) != 3:
        raise Fail("trust-list-invalid: segments")
    header = loads_strict(b64ud(parts[0]))
    if not isinstance(header, dict) or "crit" in header:
        raise Fail("trust-list-invalid: header")
    if "kid" in header and not isinstance(header["kid"], str):
        raise Fail("trust-list-invalid: kid")
    if header.get("typ") != "unionledger-trust-list+jwt" or header.get("alg") != "EdDSA":
        raise Fail("trust-list-invalid: typ/alg")
    roots = [k for k in pinned_roots if jwk_thumbprint(k["x"]) == header.get("kid")]
    if not roots:
        raise Fail("trust-list-signature-invalid: unknown root kid")
    try:
        VerifyKey(b64ud(roots[0]["x"])).verify(f"{parts[0]}.{parts[1]}".encode(), b64ud(parts[2]))
    except (BadSignatureError, ValueError) as e:
        raise Fail("trust-list-signature-invalid") from e
    claims = loads_strict(b64ud(parts[1]))
    if not isinstance(claims, dict) or any(claims.get(k) is None for k in ("iss", "iat", "exp")):
        raise Fail("trust-list-invalid: claims")
    if claims.get("aud") or any(
        k in claims and not isinstance(claims[k], str) for k in ("sub", "jti")
    ):
        raise Fail("trust-list-invalid: aud/sub/jti")
    if not (
        is_int(claims["iat"])
        and is_int(claims["exp"])
        and isinstance(claims["iss"], str)
        and isinstance(claims.get("keys"), list)
    ):
        raise Fail("trust-list-invalid: claim types")
    seen: set[str] = set()
    for entry in claims["keys"]:
        _check_trust_entry(entry, seen)
    if claims["iat"] - 300 > now:
        raise Fail("trust-list-expired: issued in the future")
    if now >= claims["exp"]:
        raise Fail("trust-list-expired")
    return claims
