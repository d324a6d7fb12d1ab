"""Receipts: every leaf of small trees verifies, both encodings round-trip, any change is caught."""

from __future__ import annotations

import dataclasses
import json
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keys
from verifier import merkle
from verifier.checkpoint import Checkpoint, Cosigner, sign_checkpoint
from verifier.errors import CheckpointError, InclusionProofError, ReceiptError
from verifier.note import NoteSigner
from verifier.receipt import Receipt, VerifiedReceipt, verify_receipt

LOG = NoteSigner("ledger.example.org/unions/test", keys.PrivateKey.from_seed(b"\x07" * 32))
OTHER_KEY = NoteSigner(LOG.name, keys.PrivateKey.from_seed(b"\x08" * 32))
VERIFIER = LOG.verifier()


class Tree:
    """A naive in-memory log: entries, their leaf hashes, and perfect-subtree hashes."""

    def __init__(self, size: int) -> None:
        self.entries = [
            f"redemption {i} of {size}: 送清凉".encode() + bytes([i]) for i in range(size)
        ]
        self.leaves = [merkle.leaf_hash(e) for e in self.entries]
        self.root = merkle.root_from_leaf_hashes(self.leaves)
        self.checkpoint = Checkpoint(LOG.name, size, self.root)
        self.note = sign_checkpoint(self.checkpoint, LOG)

    def hash_at(self, level: int, index: int) -> bytes:
        width = 1 << level
        return merkle.root_from_leaf_hashes(self.leaves[index * width : (index + 1) * width])

    def receipt(self, index: int) -> Receipt:
        proof = merkle.inclusion_proof(index, len(self.entries), self.hash_at)
        return Receipt(index, self.entries[index], tuple(proof), self.note)


@cache
def tree(size: int) -> Tree:
    return Tree(size)


def test_every_leaf_of_trees_of_size_1_to_40_verifies_and_round_trips() -> None:
    for size in range(1, 41):
        t = tree(size)
        for index in range(size):
            receipt = t.receipt(index)
            want = VerifiedReceipt(t.entries[index], index, t.checkpoint)
            assert verify_receipt(receipt, VERIFIER) == want
            assert Receipt.from_json(receipt.to_json()) == receipt
            assert Receipt.from_tlog_proof(receipt.to_tlog_proof(), receipt.entry) == receipt


def test_the_formats() -> None:
    receipt = tree(3).receipt(2)
    document = json.loads(receipt.to_json())
    assert list(document) == ["checkpoint", "entry", "format", "inclusion", "index"]
    assert document["format"] == "unionledger-receipt/1"
    assert document["index"] == 2
    assert document["checkpoint"] == tree(3).note
    compact = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert receipt.to_json() == compact
    assert "—" in compact  # the note's em dash is kept as is, not escaped
    [sibling] = receipt.inclusion
    assert sibling == merkle.node_hash(tree(3).leaves[0], tree(3).leaves[1])
    assert receipt.to_tlog_proof() == (
        f"c2sp.org/tlog-proof@v1\nindex 2\n{document['inclusion'][0]}\n\n{tree(3).note}"
    )


def test_a_single_leaf_tree_has_an_empty_proof() -> None:
    receipt = tree(1).receipt(0)
    assert receipt.inclusion == ()
    assert receipt.to_tlog_proof() == f"c2sp.org/tlog-proof@v1\nindex 0\n\n{tree(1).note}"
    assert verify_receipt(Receipt.from_tlog_proof(receipt.to_tlog_proof(), receipt.entry), VERIFIER)


def test_cosigned_receipts_need_their_quorum() -> None:
    witness = Cosigner("witness.example/parent-union", keys.PrivateKey.from_seed(b"\x09" * 32))
    t = tree(5)
    receipt = dataclasses.replace(
        t.receipt(3), checkpoint_note=t.note + witness.cosign(t.checkpoint, 1_767_225_600)
    )
    verify_receipt(receipt, VERIFIER, witnesses=[witness.verifier()], witness_quorum=1)
    with pytest.raises(ReceiptError, match="witnesses"):
        verify_receipt(t.receipt(3), VERIFIER, witnesses=[witness.verifier()], witness_quorum=1)


# --- every kind of change is rejected -----------------------------------------------------------


def rejected(receipt: Receipt, **kwargs: object) -> ReceiptError:
    with pytest.raises(ReceiptError) as caught:
        verify_receipt(receipt, VERIFIER, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_every_other_index_is_rejected() -> None:
    t = tree(13)
    for index in range(13):
        receipt = t.receipt(index)
        for other in range(20):
            if other != index:
                rejected(dataclasses.replace(receipt, index=other))


def test_index_outside_the_tree_is_rejected() -> None:
    receipt = tree(8).receipt(7)
    error = rejected(dataclasses.replace(receipt, checkpoint_note=tree(7).note))
    assert "outside the tree of size 7" in str(error)


def test_other_entries_are_rejected() -> None:
    receipt = tree(9).receipt(4)
    for entry in [b"", tree(9).entries[5], receipt.entry + b"\x00", receipt.entry[:-1]]:
        error = rejected(dataclasses.replace(receipt, entry=entry))
        assert isinstance(error.__cause__, InclusionProofError)


def test_proof_changes_are_rejected() -> None:
    receipt = tree(11).receipt(6)
    proof = receipt.inclusion
    for changed in [
        proof[:-1],
        (*proof, proof[0]),
        proof[::-1],
        (proof[1], proof[0], *proof[2:]),
        (bytes(32), *proof[1:]),
        (),
    ]:
        rejected(dataclasses.replace(receipt, inclusion=changed))


def test_checkpoints_of_other_trees_are_rejected() -> None:
    receipt = tree(12).receipt(3)
    for size in (11, 13, 16):  # signed by the right key, but another size and root
        error = rejected(dataclasses.replace(receipt, checkpoint_note=tree(size).note))
        assert isinstance(error.__cause__, InclusionProofError)
    same_size_other_root = Checkpoint(LOG.name, 12, merkle.node_hash(tree(12).root, bytes(32)))
    rejected(
        dataclasses.replace(receipt, checkpoint_note=sign_checkpoint(same_size_other_root, LOG))
    )


def test_signature_key_and_origin_are_checked() -> None:
    t = tree(6)
    receipt = t.receipt(1)
    forged = dataclasses.replace(receipt, checkpoint_note=sign_checkpoint(t.checkpoint, OTHER_KEY))
    assert isinstance(rejected(forged).__cause__, CheckpointError)
    with pytest.raises(ReceiptError) as caught:
        verify_receipt(receipt, OTHER_KEY.verifier())
    assert isinstance(caught.value.__cause__, CheckpointError)
    rejected(receipt, origin="ledger.example.org/unions/other")
    flipped = receipt.checkpoint_note[:-4] + "AAA\n"
    rejected(dataclasses.replace(receipt, checkpoint_note=flipped))


@given(st.integers(1, 40), st.data())
def test_any_bit_flip_in_entry_or_proof_is_rejected(size: int, data: st.DataObject) -> None:
    receipt = tree(size).receipt(data.draw(st.integers(0, size - 1), label="index"))
    fields = ["entry"] + (["inclusion"] if receipt.inclusion else [])
    field = data.draw(st.sampled_from(fields), label="field")
    if field == "entry":
        entry = bytearray(receipt.entry)
        bit = data.draw(st.integers(0, len(entry) * 8 - 1), label="bit")
        entry[bit // 8] ^= 1 << (bit % 8)
        receipt = dataclasses.replace(receipt, entry=bytes(entry))
    else:
        which = data.draw(st.integers(0, len(receipt.inclusion) - 1), label="hash")
        node = bytearray(receipt.inclusion[which])
        bit = data.draw(st.integers(0, 255), label="bit")
        node[bit // 8] ^= 1 << (bit % 8)
        proof = list(receipt.inclusion)
        proof[which] = bytes(node)
        receipt = dataclasses.replace(receipt, inclusion=tuple(proof))
    rejected(receipt)


@given(st.sampled_from([(13, 0), (13, 6), (13, 12), (16, 10), (1, 0)]), st.data())
def test_any_character_change_in_either_encoding_is_rejected(
    where: tuple[int, int], data: st.DataObject
) -> None:
    receipt = tree(where[0]).receipt(where[1])
    encoding = data.draw(st.sampled_from(["json", "tlog-proof"]), label="encoding")
    text = receipt.to_json() if encoding == "json" else receipt.to_tlog_proof()
    position = data.draw(st.integers(0, len(text) - 1), label="position")
    char = data.draw(st.characters(codec="utf-8"), label="char")
    tampered = text[:position] + char + text[position + 1 :]
    if tampered == text:
        return
    with pytest.raises(ReceiptError):
        parse_and_verify(encoding, tampered, receipt.entry)


def parse_and_verify(encoding: str, text: str, entry: bytes) -> VerifiedReceipt:
    if encoding == "json":
        return verify_receipt(Receipt.from_json(text), VERIFIER)
    return verify_receipt(Receipt.from_tlog_proof(text, entry), VERIFIER)


# --- strict parsing -----------------------------------------------------------------------------


def _json(**changes: object) -> str:
    document = json.loads(tree(4).receipt(1).to_json())
    document.update(changes)
    return json.dumps(document)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "null",
        '"receipt"',
        _json(format="unionledger-receipt/2"),
        _json(format=None),
        _json(extra="member"),
        _json(index="1"),
        _json(index=True),
        _json(index=1.0),
        _json(index=-1),
        _json(index=2**64),
        _json(entry=None),
        _json(entry="not base64!"),
        _json(entry="AB=="),  # non-canonical padding bits
        _json(entry="_-8="),  # base64url
        _json(entry="AAA"),  # unpadded
        _json(inclusion="AAAA"),
        _json(inclusion=[1]),
        _json(inclusion=["AAAA"]),  # 3 bytes, not a hash
        _json(inclusion=["A" * 43 + "="] * 65),  # too many hashes
        _json(checkpoint=None),
        _json(checkpoint=""),
        _json(checkpoint="not a signed note\n"),
        _json().replace('"index": 1', '"index": 1, "index": 1'),  # duplicate member
        _json().replace('"index": 1', '"index": NaN'),
        _json().replace('"index": 1', '"index": 1e0'),
    ],
)
def test_malformed_json_is_rejected(text: str) -> None:
    with pytest.raises(ReceiptError):
        Receipt.from_json(text)


def test_missing_member_is_rejected() -> None:
    document = json.loads(tree(4).receipt(1).to_json())
    del document["inclusion"]
    with pytest.raises(ReceiptError, match="missing"):
        Receipt.from_json(json.dumps(document))


def _proof() -> str:
    return tree(4).receipt(1).to_tlog_proof()


@pytest.mark.parametrize(
    "text",
    [
        "",
        _proof().replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
        _proof().replace("index 1\n", "extra AAAA\nindex 1\n"),
        _proof().replace("index 1\n", "index 01\n"),
        _proof().replace("index 1\n", "index  1\n"),
        _proof().replace("index 1\n", "index\n"),
        _proof().replace("index 1\n", "index -1\n"),
        _proof().replace("index 1\n", "Index 1\n"),
        _proof().replace("index 1\n", "index 1\nAAAA\n"),  # not a 32-byte hash
        _proof().replace("\n\n", "\n", 1),  # no blank line before the checkpoint
        _proof().split("\n\n")[0],
        _proof().split("\n\n")[0] + "\n\n",  # no checkpoint
        "c2sp.org/tlog-proof@v1\nindex 0\n" + ("A" * 43 + "=\n") * 65 + "\n" + tree(4).note,
    ],
)
def test_malformed_tlog_proofs_are_rejected(text: str) -> None:
    with pytest.raises(ReceiptError):
        Receipt.from_tlog_proof(text, b"entry")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((-1, b"", (), tree(1).note), ReceiptError),
        ((True, b"", (), tree(1).note), TypeError),
        ((0, "entry", (), tree(1).note), TypeError),
        ((0, b"", [bytes(32)], tree(1).note), TypeError),
        ((0, b"", (bytes(31),), tree(1).note), ReceiptError),
        ((0, b"", ("00" * 32,), tree(1).note), TypeError),
        ((0, b"", (), "no signatures\n"), ReceiptError),
        ((0, b"", (), tree(1).note.encode()), TypeError),
    ],
)
def test_invalid_receipts_cannot_be_built(args: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        Receipt(*args)  # type: ignore[arg-type]


def test_the_remembered_check_of_a_note_vouches_for_that_note_only() -> None:
    # Receipts remember the notes that passed (a batch's receipts share one): another text,
    # even one differing in a single character, is checked afresh.
    good = tree(1).note
    for _ in range(2):
        assert Receipt(0, b"", (), good).checkpoint_note == good
    broken = good[: good.index("\n\n")] + "\n\n"  # the body without its signature lines
    with pytest.raises(ReceiptError, match="not a signed note"):
        Receipt(0, b"", (), broken)
    with pytest.raises(ReceiptError, match="not a signed note"):
        Receipt(0, b"", (), good.replace("\u2014", "-", 1))
