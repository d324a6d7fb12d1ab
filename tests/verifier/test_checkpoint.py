"""C2SP checkpoints and v1 cosignatures: known answers, strict parsing, signing, verification."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keys
from verifier.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    CosignatureVerifier,
    Cosigner,
    cosignature_message,
    cosignature_timestamp,
    sign_checkpoint,
    verify_checkpoint,
)
from verifier.errors import CheckpointError, NoteError
from verifier.note import NoteSigner, NoteVerifier, Signature, split_note

ORIGIN = "ledger.example.org/unions/2026"
ROOT_777 = base64.b64decode("sxQyi2MXKQ4x8Hv0ZaAGQMU7qNGREO8W6nEhxS1C8ws=")
KAT_VKEY = f"{ORIGIN}+3c08fd75+AcZV6mi8EuxiMW9jth9nDyEy677aFq79xwu3tiUeRVqX"
KAT_BODY = f"{ORIGIN}\n777\nsxQyi2MXKQ4x8Hv0ZaAGQMU7qNGREO8W6nEhxS1C8ws=\n"
KAT_NOTE = (
    KAT_BODY + f"\n— {ORIGIN} PAj9dYh6TzUZX+mymIjIKx4qTycED7QufaW+rS0jGMkJVyx0fELo2bb3wH28plRS3Fp"
    "bTBc5+cni8b2SYMSQGUfUVQM=\n"
)

LOG = NoteSigner("log.example/test", keys.PrivateKey.from_seed(b"\x11" * 32))
OTHER_LOG = NoteSigner("log.example/test", keys.PrivateKey.from_seed(b"\x12" * 32))
WITNESS_A = Cosigner("witness.example/a", keys.PrivateKey.from_seed(b"\x21" * 32))
WITNESS_B = Cosigner("witness.example/b", keys.PrivateKey.from_seed(b"\x22" * 32))
CHECKPOINT = Checkpoint(LOG.name, 42, hashlib.sha256(b"root").digest())


# --- known answers ----------------------------------------------------------------------------


def test_formats_reference_checkpoint() -> None:
    checkpoint = verify_checkpoint(KAT_NOTE, NoteVerifier.from_key_string(KAT_VKEY))
    assert checkpoint == Checkpoint(ORIGIN, 777, ROOT_777)
    assert checkpoint.body() == KAT_BODY
    assert verify_checkpoint(KAT_NOTE, NoteVerifier.from_key_string(KAT_VKEY), origin=ORIGIN)


def test_cosignature_timestamps_of_published_examples() -> None:
    # c2sp.org/tlog-cosignature's example line (its signed message shows "time 1679315147").
    line = (
        "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJs"
        "X3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
    )
    assert cosignature_timestamp(Signature.parse_line(line)) == 1679315147
    # transparency-dev/formats note_cosigv1_test.go, TestCosignatureTimestamp.
    line = (
        "— w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworD"
        "cFiEBYJXORmnFBOBA=="
    )
    assert cosignature_timestamp(Signature.parse_line(line)) == 1727964367


def test_published_cosignature_verifier_key_round_trips() -> None:
    # transparency-dev/formats note_cosigv1_test.go: a native type 0x04 verifier key.
    vkey = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    verifier = CosignatureVerifier.from_key_string(vkey)
    assert verifier.key_id.hex() == "da77ade7"
    assert verifier.key_string() == vkey
    with pytest.raises(NoteError, match="type 0x01"):
        CosignatureVerifier.from_key_string(KAT_VKEY)


def test_cosignature_message_layout() -> None:
    # c2sp.org/tlog-cosignature, "Ed25519 signed message".
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert cosignature_message(body, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


# --- the value and its strict text form --------------------------------------------------------


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpoint("o", 0, bytes(32)),
        Checkpoint("example.com/log with spaces+plus", MAX_TREE_SIZE, bytes(range(32))),
        Checkpoint("o", 7, bytes(32), ("ext one", "— ext two")),
    ],
)
def test_body_round_trips(checkpoint: Checkpoint) -> None:
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


@pytest.mark.parametrize(
    "body",
    [
        "",
        "o\n1\n",
        "o\n1\n" + base64.b64encode(bytes(32)).decode(),  # no final newline
        "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # empty origin
        "o\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # leading zero
        "o\n00\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n+1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n 1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n1_0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n٣\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # Arabic-Indic digit
        "o\n\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        f"o\n{MAX_TREE_SIZE + 1}\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",  # no padding
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",  # non-zero trailing bits
        "o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "o\n1\n" + base64.b64encode(bytes(33)).decode() + "\n",
        "o\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",  # empty extension line
        "o\r\n1\r\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n",
        "o\t\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    ],
)
def test_malformed_bodies_are_rejected(body: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(body)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("", 1, bytes(32)), CheckpointError),
        (("a\nb", 1, bytes(32)), CheckpointError),
        (("o", -1, bytes(32)), CheckpointError),
        (("o", MAX_TREE_SIZE + 1, bytes(32)), CheckpointError),
        (("o", 1, bytes(31)), CheckpointError),
        (("o", 1, bytes(32), ("",)), CheckpointError),
        (("o", 1, bytes(32), ("a\nb",)), CheckpointError),
        (("o", True, bytes(32)), TypeError),
        (("o", 1.0, bytes(32)), TypeError),
        (("o", 1, "00" * 32), TypeError),
        (("o", 1, bytes(32), ["ext"]), TypeError),
        ((b"o", 1, bytes(32)), TypeError),
    ],
)
def test_invalid_checkpoints_cannot_be_built(
    args: tuple[object, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        Checkpoint(*args)  # type: ignore[arg-type]


checkpoint_lines = st.text(st.characters(min_codepoint=0x20, codec="utf-8"), min_size=1)


@given(
    checkpoint_lines,
    st.integers(0, MAX_TREE_SIZE),
    st.binary(min_size=32, max_size=32),
    st.lists(checkpoint_lines, max_size=3),
)
def test_any_checkpoint_round_trips(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(ext))
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


# --- signing and verifying ---------------------------------------------------------------------


def test_sign_and_verify() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG)
    assert note.startswith(CHECKPOINT.body() + "\n— log.example/test ")
    assert verify_checkpoint(note, LOG.verifier()) == CHECKPOINT
    assert verify_checkpoint(note, LOG.verifier(), origin=LOG.name) == CHECKPOINT


def test_signing_key_name_must_be_the_origin() -> None:
    with pytest.raises(CheckpointError, match="not the checkpoint origin"):
        sign_checkpoint(Checkpoint("elsewhere.example", 1, bytes(32)), LOG)


def test_origin_defaults_to_the_log_key_name() -> None:
    foreign = LOG.sign(Checkpoint("elsewhere.example", 1, bytes(32)).body())
    with pytest.raises(CheckpointError, match="origin"):
        verify_checkpoint(foreign, LOG.verifier())
    assert verify_checkpoint(foreign, LOG.verifier(), origin="elsewhere.example").size == 1


def test_wrong_origin_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="origin"):
        verify_checkpoint(sign_checkpoint(CHECKPOINT, LOG), LOG.verifier(), origin="other")


def test_another_key_is_rejected_with_the_note_error_as_cause() -> None:
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(sign_checkpoint(CHECKPOINT, LOG), OTHER_LOG.verifier())
    assert isinstance(caught.value.__cause__, NoteError)


def test_a_signed_note_that_is_not_a_checkpoint_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="three lines"):
        verify_checkpoint(LOG.sign(f"{LOG.name}\nhello\n"), LOG.verifier())


@pytest.mark.parametrize(
    "tamper",
    [
        lambda n: n.replace("\n42\n", "\n43\n"),
        lambda n: n.replace("\n42\n", "\n042\n"),
        lambda n: n.replace(LOG.name + "\n", LOG.name + "x\n", 1),
        lambda n: n.replace("\n\n", "\next\n\n", 1),
        lambda n: n[:-3] + ("A" if n[-3] != "A" else "B") + n[-2:],
    ],
)
def test_tampered_checkpoints_are_rejected(tamper: object) -> None:
    note = sign_checkpoint(CHECKPOINT, LOG)
    tampered = tamper(note)  # type: ignore[operator]
    assert tampered != note
    with pytest.raises(CheckpointError):
        verify_checkpoint(tampered, LOG.verifier())


# --- cosignatures ------------------------------------------------------------------------------


def cosigned(*witnesses: Cosigner, timestamp: int = 1_767_225_600) -> str:
    note = sign_checkpoint(CHECKPOINT, LOG)
    return note + "".join(w.cosign(CHECKPOINT, timestamp) for w in witnesses)


def test_cosignature_verifies_and_carries_its_time() -> None:
    note = cosigned(WITNESS_A, timestamp=1_767_225_600)
    witnesses = [WITNESS_A.verifier(), WITNESS_B.verifier()]
    assert verify_checkpoint(note, LOG.verifier(), witnesses=witnesses, witness_quorum=1)
    line = split_note(note)[1][1]
    assert line.key_id == WITNESS_A.verifier().key_id
    assert cosignature_timestamp(line) == 1_767_225_600
    # The signed message is exactly the spec's: header, time line, body.
    message = cosignature_message(CHECKPOINT.body(), 1_767_225_600)
    WITNESS_A.private_key.public_key.verify(line.signature[8:], message)


def test_cosignature_key_id_uses_type_0x04() -> None:
    key = WITNESS_A.private_key.public_key
    raw = WITNESS_A.name.encode() + b"\n\x04" + key.to_bytes()
    assert WITNESS_A.verifier().key_id == hashlib.sha256(raw).digest()[:4]
    assert WITNESS_A.verifier().key_id != NoteVerifier(WITNESS_A.name, key).key_id
    vkey = WITNESS_A.verifier().key_string()
    assert CosignatureVerifier.from_key_string(vkey) == WITNESS_A.verifier()


def test_quorum_is_enforced() -> None:
    witnesses = [WITNESS_A.verifier(), WITNESS_B.verifier()]
    note = cosigned(WITNESS_A)
    with pytest.raises(CheckpointError, match="1 of the required 2"):
        verify_checkpoint(note, LOG.verifier(), witnesses=witnesses, witness_quorum=2)
    both = cosigned(WITNESS_A, WITNESS_B)
    verify_checkpoint(both, LOG.verifier(), witnesses=witnesses, witness_quorum=2)
    with pytest.raises(ValueError, match="witness_quorum"):
        verify_checkpoint(both, LOG.verifier(), witnesses=witnesses, witness_quorum=3)
    # The same witness listed twice is still one witness.
    with pytest.raises(ValueError, match="witness_quorum"):
        verify_checkpoint(note, LOG.verifier(), witnesses=witnesses[:1] * 2, witness_quorum=2)


def test_witnesses_alone_are_not_enough() -> None:
    note = CHECKPOINT.body() + "\n" + WITNESS_A.cosign(CHECKPOINT, 1)
    with pytest.raises(CheckpointError, match="not signed by the log key"):
        verify_checkpoint(note, LOG.verifier(), witnesses=[WITNESS_A.verifier()])


def test_a_bad_cosignature_from_a_trusted_witness_rejects_the_checkpoint() -> None:
    other = Checkpoint(LOG.name, 43, CHECKPOINT.root_hash)
    note = sign_checkpoint(CHECKPOINT, LOG) + WITNESS_A.cosign(other, 1)
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(note, LOG.verifier(), witnesses=[WITNESS_A.verifier()])
    # Not trusted as a witness: the same line is ignored.
    assert verify_checkpoint(note, LOG.verifier()) == CHECKPOINT


def test_cosignature_with_a_changed_timestamp_is_rejected() -> None:
    line = split_note(cosigned(WITNESS_A, timestamp=100))[1][1]
    moved = Signature(line.name, line.key_id, (101).to_bytes(8, "big") + line.signature[8:])
    note = sign_checkpoint(CHECKPOINT, LOG) + moved.line()
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(note, LOG.verifier(), witnesses=[WITNESS_A.verifier()])


@pytest.mark.parametrize("timestamp", [-1, 2**63])
def test_cosignature_timestamps_are_bounded(timestamp: int) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        WITNESS_A.cosign(CHECKPOINT, timestamp)


def test_cosignature_with_a_timestamp_above_2_63_is_rejected() -> None:
    line = split_note(cosigned(WITNESS_A))[1][1]
    forged = Signature(line.name, line.key_id, b"\x80" + line.signature[1:])
    note = sign_checkpoint(CHECKPOINT, LOG) + forged.line()
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, LOG.verifier(), witnesses=[WITNESS_A.verifier()])
