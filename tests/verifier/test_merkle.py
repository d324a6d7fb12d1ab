"""RFC 6962 / RFC 9162 Merkle trees: shared vectors, RFC roots, and properties against a naive
recursive reference."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier import merkle
from verifier.errors import ConsistencyProofError, InclusionProofError, ProofError
from verifier.merkle import (
    EMPTY_ROOT,
    CompactRange,
    HashAt,
    consistency_proof,
    inclusion_proof,
    inclusion_prover,
    leaf_hash,
    node_hash,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)

SHARED = Path(os.environ.get("UNIONLEDGER_SHARED") or Path(__file__).parents[3] / "shared")
VECTORS = SHARED / "vectors" / "merkle"


# --- naive reference: RFC 6962 section 2.1 written out recursively --------------------------


def ref_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def naive_hash_at(leaves: list[bytes]) -> HashAt:
    """hash_at from the naive MTH, refusing anything that is not a perfect subtree."""

    @cache
    def hash_at(level: int, index: int) -> bytes:
        start, end = index << level, (index + 1) << level
        assert start >= 0, (level, index)
        assert end <= len(leaves), (level, index, len(leaves))
        return ref_mth(leaves[start:end])

    return hash_at


@st.composite
def logs(draw: st.DrawFn, min_size: int = 1, max_size: int = 300) -> list[bytes]:
    """Random leaves, sizes spread evenly over the range; distinct, so that a proof for one leaf
    can never be a proof for an equal leaf elsewhere."""
    n = draw(st.integers(min_size, max_size), label="size")
    raw = draw(st.lists(st.binary(max_size=12), min_size=n, max_size=n))
    return [i.to_bytes(2, "big") + data for i, data in enumerate(raw)]


def other_than(value: int, low: int, high: int) -> st.SearchStrategy[int]:
    """An integer in [low, high] other than ``value`` (which must lie in the range)."""
    return st.integers(low, high - 1).map(lambda x: x + 1 if x >= value else x)


# --- the shared transparency-dev vectors ------------------------------------------------------


def _vector_files() -> list[Path]:
    files = sorted(VECTORS.rglob("*.json"))
    # A missing or empty folder must fail the run, never skip it: keep one case that fails.
    return files or [VECTORS / "MISSING"]


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "", validate=True)


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS)) if path.is_relative_to(VECTORS) else str(path)


def test_vector_folder_is_complete() -> None:
    assert VECTORS.is_dir(), f"shared Merkle vectors not found at {VECTORS}"
    assert len(list((VECTORS / "inclusion").rglob("*.json"))) >= 90
    assert len(list((VECTORS / "consistency").rglob("*.json"))) >= 90


@pytest.mark.parametrize("path", _vector_files(), ids=_id)
def test_shared_vector(path: Path) -> None:
    assert path.is_file(), f"shared Merkle vectors not found at {VECTORS}"
    case: dict[str, Any] = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    if "leafIdx" in case:
        args = (_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof)
        if case["wantErr"]:
            with pytest.raises(InclusionProofError):
                verify_inclusion(*args, _b64(case["root"]))
        else:
            verify_inclusion(*args, _b64(case["root"]))
    else:
        cargs = (case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]), proof)
        if case["wantErr"]:
            with pytest.raises(ConsistencyProofError):
                verify_consistency(*cargs)
        else:
            verify_consistency(*cargs)


# --- RFC 6962 root vectors (shared/vectors/merkle/README.md) ---------------------------------

RFC6962_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
RFC6962_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("n", range(9))
def test_rfc6962_roots(n: int) -> None:
    leaves = [bytes.fromhex(x) for x in RFC6962_LEAVES[:n]]
    hashes = [leaf_hash(d) for d in leaves]
    want = bytes.fromhex(RFC6962_ROOTS[n])
    assert root_from_leaf_hashes(hashes) == want
    compact = CompactRange()
    compact.extend(hashes)
    assert compact.root() == want
    assert subtree_root(0, n, naive_hash_at(leaves)) == want


def test_hash_primitives() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


# --- roots ------------------------------------------------------------------------------------


@given(logs())
def test_all_roots_agree(leaves: list[bytes]) -> None:
    n = len(leaves)
    want = ref_mth(leaves)
    hashes = [leaf_hash(d) for d in leaves]
    assert root_from_leaf_hashes(hashes) == want
    compact = CompactRange()
    compact.extend(hashes)
    assert compact.size == n
    assert len(compact.hashes) == n.bit_count()
    assert compact.root() == want
    assert subtree_root(0, n, naive_hash_at(leaves)) == want


def test_compact_range_grows_one_leaf_at_a_time() -> None:
    leaves = [bytes([i]) for i in range(70)]
    compact = CompactRange()
    for n, data in enumerate(leaves, start=1):
        compact.append(leaf_hash(data))
        assert compact.root() == ref_mth(leaves[:n])
        restored = CompactRange.from_bytes(n, compact.to_bytes())
        assert restored == compact
        assert restored.root() == compact.root()


def test_compact_range_appends_in_amortised_constant_hashes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        nonlocal calls
        calls += 1
        return real(data)

    monkeypatch.setattr(merkle, "_sha256", counting)
    compact = CompactRange()
    compact.extend(leaf_hash(i.to_bytes(4, "big")) for i in range(4096))
    # leaf_hash itself also goes through _sha256: one per leaf, plus one merge per carry.
    assert calls == 4096 + (4096 - 1)


def test_compact_range_is_validated() -> None:
    h = leaf_hash(b"")
    with pytest.raises(ValueError, match="holds 2 hashes"):
        CompactRange(3, [h])
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange(1, [b"short"])
    with pytest.raises(ValueError, match="negative"):
        CompactRange(-1)
    with pytest.raises(ValueError, match="not 32 bytes"):
        CompactRange.from_bytes(3, h)
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().append(b"short")
    copy = CompactRange(1, [h]).copy()
    copy.append(h)
    assert copy.size == 2


def test_subtree_root_refuses_unaligned_ranges() -> None:
    hash_at = naive_hash_at([bytes([i]) for i in range(16)])
    assert subtree_root(4, 7, hash_at) == ref_mth([bytes([i]) for i in range(4, 7)])
    assert subtree_root(3, 3, hash_at) == EMPTY_ROOT
    with pytest.raises(ValueError, match="aligned"):
        subtree_root(2, 6, hash_at)
    with pytest.raises(ValueError, match="range"):
        subtree_root(5, 4, hash_at)


# --- proofs: generation matches the RFC, and verifies -----------------------------------------


def test_every_proof_of_every_small_tree() -> None:
    """Exhaustive for n <= 40: every index, every (m, n) pair, against the recursive RFC text."""
    leaves = [i.to_bytes(2, "big") for i in range(40)]
    hash_at = naive_hash_at(leaves)
    for n in range(1, 41):
        root = ref_mth(leaves[:n])
        for i in range(n):
            proof = inclusion_proof(i, n, hash_at)
            assert proof == ref_path(i, leaves[:n])
            verify_inclusion(leaf_hash(leaves[i]), i, n, proof, root)
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, hash_at)
            assert proof == ref_subproof(m, leaves[:n], True)
            verify_consistency(m, n, ref_mth(leaves[:m]), root, proof)
            assert root_from_consistency_proof(m, n, ref_mth(leaves[:m]), proof) == root


@settings(max_examples=30)
@given(logs())
def test_generated_proofs_verify(leaves: list[bytes]) -> None:
    n = len(leaves)
    hash_at = naive_hash_at(leaves)
    root = ref_mth(leaves)
    for i in range(n):
        proof = inclusion_proof(i, n, hash_at)
        assert root_from_inclusion_proof(leaf_hash(leaves[i]), i, n, proof) == root
    for m in range(1, n + 1):
        root1 = subtree_root(0, m, hash_at)
        verify_consistency(m, n, root1, root, consistency_proof(m, n, hash_at))


@settings(max_examples=40)
@given(logs(min_size=1), st.data())
def test_a_prover_gives_each_leaf_its_own_proof(leaves: list[bytes], data: st.DataObject) -> None:
    # The sequencer proves a batch's leaves with one prover, its subtree roots shared between
    # them: asked in any order, with repeats, each proof is inclusion_proof's.
    n = len(leaves)
    hash_at = naive_hash_at(leaves)
    prove = inclusion_prover(n, hash_at)
    order = data.draw(st.lists(st.integers(0, n - 1), max_size=2 * n))
    for i in order:
        assert prove(i) == inclusion_proof(i, n, hash_at)
    for bad in (-1, n):
        with pytest.raises(ValueError, match="not in a tree"):
            prove(bad)


def _flip(proof: list[bytes], element: int, bit: int) -> list[bytes]:
    tampered = list(proof)
    h = bytearray(tampered[element])
    h[bit // 8] ^= 1 << (bit % 8)
    tampered[element] = bytes(h)
    return tampered


@settings(max_examples=60)
@given(logs(min_size=2), st.data())
def test_tampered_inclusion_proofs_fail(log: list[bytes], data: st.DataObject) -> None:
    n = data.draw(st.integers(2, len(log)), label="tree size")
    leaves = log[:n]
    root = ref_mth(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    h = leaf_hash(leaves[i])
    proof = inclusion_proof(i, n, naive_hash_at(leaves))
    verify_inclusion(h, i, n, proof, root)

    def rejected(index: int, size: int, p: list[bytes], r: bytes = root) -> None:
        with pytest.raises(InclusionProofError):
            verify_inclusion(h, index, size, p, r)

    element = data.draw(st.integers(0, len(proof) - 1), label="element")
    rejected(i, n, _flip(proof, element, data.draw(st.integers(0, 255), label="bit")))
    rejected(data.draw(other_than(i, 0, n - 1), label="other index"), n, proof)
    rejected(i, n, [*proof, proof[0]])
    rejected(i, n, [proof[0], *proof])
    rejected(i, n, proof[:-1])
    rejected(i, n, proof, _flip([root], 0, 0)[0])
    # Another size of the same log, with that tree's authentic root. (The size alone is not
    # always bound by the proof: see test_the_root_not_the_proof_binds_the_size.)
    others = [s for s in range(i + 1, len(log) + 1) if s != n]
    if others:
        other = data.draw(st.sampled_from(others), label="other size")
        rejected(i, other, proof, ref_mth(log[:other]))


@settings(max_examples=60)
@given(logs(min_size=3), st.data())
def test_tampered_consistency_proofs_fail(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    hash_at = naive_hash_at(leaves)
    m = data.draw(st.integers(1, n - 1), label="size1")
    root1, root2 = ref_mth(leaves[:m]), ref_mth(leaves)
    proof = consistency_proof(m, n, hash_at)
    verify_consistency(m, n, root1, root2, proof)

    def rejected(size1: int, size2: int, r1: bytes, r2: bytes, p: list[bytes]) -> None:
        with pytest.raises(ConsistencyProofError):
            verify_consistency(size1, size2, r1, r2, p)

    element = data.draw(st.integers(0, len(proof) - 1), label="element")
    rejected(m, n, root1, root2, _flip(proof, element, data.draw(st.integers(0, 255))))
    rejected(m, n, root1, root2, [*proof, proof[0]])
    rejected(m, n, root1, root2, [proof[0], *proof])
    rejected(m, n, root1, root2, proof[:-1])
    rejected(m, n, root2, root1, proof)
    rejected(m, n, _flip([root1], 0, 7)[0], root2, proof)
    rejected(m, n, root1, _flip([root2], 0, 7)[0], proof)
    # Another size1 or size2, each with its tree's authentic root.
    m2 = data.draw(other_than(m, 1, n - 1), label="other size1")
    rejected(m2, n, ref_mth(leaves[:m2]), root2, proof)
    n2 = data.draw(other_than(n, m, n), label="other size2")
    rejected(m, n2, root1, ref_mth(leaves[:n2]), proof)


def test_the_root_not_the_proof_binds_the_size() -> None:
    """Surprising but per RFC 9162: leaf 0's proof in a 5-leaf tree runs the very same hash
    computation as a proof for leaf 0 of an 8-leaf tree, so (size 8, root of size 5) passes.
    Callers must take size and root together from one signed checkpoint."""
    leaves = [bytes([i]) for i in range(8)]
    proof5 = inclusion_proof(0, 5, naive_hash_at(leaves[:5]))
    verify_inclusion(leaf_hash(leaves[0]), 0, 8, proof5, ref_mth(leaves[:5]))
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf_hash(leaves[0]), 0, 8, proof5, ref_mth(leaves))


def test_verifiers_fail_closed() -> None:
    leaves = [bytes([i]) for i in range(5)]
    hash_at = naive_hash_at(leaves)
    root = ref_mth(leaves)
    h = leaf_hash(leaves[1])
    proof = inclusion_proof(1, 5, hash_at)
    for index, size in [(5, 5), (-1, 5), (0, 0)]:
        with pytest.raises(InclusionProofError, match="not in a tree"):
            verify_inclusion(h, index, size, proof, root)
    with pytest.raises(InclusionProofError, match="leaf hash"):
        verify_inclusion(h[:31], 1, 5, proof, root)
    with pytest.raises(InclusionProofError, match="root"):
        verify_inclusion(h, 1, 5, proof, root + b"\0")
    with pytest.raises(InclusionProofError, match="element 1"):
        verify_inclusion(h, 1, 5, [proof[0], proof[1] + b"\0", proof[2]], root)
    with pytest.raises(InclusionProofError, match="more elements"):
        verify_inclusion(h, 1, 5, [*proof, proof[0]], root)
    with pytest.raises(InclusionProofError, match="fewer elements"):
        verify_inclusion(h, 1, 5, proof[:-1], root)

    root2 = ref_mth(leaves[:2])
    cproof = consistency_proof(2, 5, hash_at)
    with pytest.raises(ConsistencyProofError, match="empty tree"):
        verify_consistency(0, 5, EMPTY_ROOT, root, [])
    with pytest.raises(ConsistencyProofError, match="empty tree"):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ConsistencyProofError, match="out of order"):
        verify_consistency(5, 2, root, root2, cproof)
    with pytest.raises(ConsistencyProofError, match="empty"):
        verify_consistency(2, 5, root2, root, [])
    with pytest.raises(ConsistencyProofError, match="not empty"):
        verify_consistency(5, 5, root, root, cproof)
    with pytest.raises(ConsistencyProofError, match="roots differ"):
        verify_consistency(5, 5, root, root2, [])
    with pytest.raises(ConsistencyProofError, match="root2"):
        verify_consistency(2, 5, root2, root[:31], cproof)
    verify_consistency(5, 5, root, root, [])
    # Every failure is one of the package's errors, and a ProofError.
    assert issubclass(ConsistencyProofError, ProofError)
    assert issubclass(InclusionProofError, ProofError)


def test_generators_refuse_bad_arguments() -> None:
    hash_at = naive_hash_at([b"a", b"b", b"c"])
    for index, size in [(3, 3), (-1, 3), (0, 0)]:
        with pytest.raises(ValueError, match="not in a tree"):
            inclusion_proof(index, size, hash_at)
    for size1, size2 in [(4, 3), (-1, 3)]:
        with pytest.raises(ValueError, match="no consistency proof"):
            consistency_proof(size1, size2, hash_at)
    # Like transparency-dev's generator: nothing to prove from (or to) the same or empty tree.
    assert consistency_proof(0, 3, hash_at) == []
    assert consistency_proof(3, 3, hash_at) == []


# --- cost: O(log n) hash_at calls, no rehashing ------------------------------------------------


def counting_hash_at() -> tuple[HashAt, Callable[[], int]]:
    calls = 0

    @cache
    def fake(level: int, index: int) -> bytes:
        return hashlib.sha256(f"{level}/{index}".encode()).digest()

    def hash_at(level: int, index: int) -> bytes:
        nonlocal calls
        calls += 1
        return fake(level, index)

    def count() -> int:
        nonlocal calls
        seen, calls = calls, 0
        return seen

    return hash_at, count


@pytest.mark.parametrize("n", [10**6, 10**6 + 1, 2**20, 2**20 - 1, 1_234_567])
def test_proofs_read_logarithmically_many_hashes(n: int) -> None:
    hash_at, count = counting_hash_at()
    bound = 2 * math.ceil(math.log2(n)) + 2
    for index in sorted({0, 1, n // 3, n // 2, n - 2, n - 1}):
        inclusion_proof(index, n, hash_at)
        assert count() <= bound, (index, n)
    for m in sorted({1, 2, 3, n // 3, n // 2, n - 1, n}):
        consistency_proof(m, n, hash_at)
        assert count() <= bound, (m, n)
    subtree_root(0, n, hash_at)
    assert count() == n.bit_count()


@given(
    before=st.integers(0, 40),
    height=st.integers(0, 5),
    after=st.integers(0, 20),
)
def test_append_subtree_equals_appending_its_leaves(before: int, height: int, after: int) -> None:
    from verifier.merkle import CompactRange, root_from_leaf_hashes

    prefix = (before >> height) << height  # align the subtree
    leaves = [
        hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(prefix + (1 << height) + after)
    ]
    one_by_one = CompactRange()
    one_by_one.extend(leaves)
    fast = CompactRange()
    fast.extend(leaves[:prefix])
    fast.append_subtree(height, root_from_leaf_hashes(leaves[prefix : prefix + (1 << height)]))
    fast.extend(leaves[prefix + (1 << height) :])
    assert fast == one_by_one
    if height > 0:
        misaligned = CompactRange()
        misaligned.extend(leaves[: prefix + 1])
        with pytest.raises(ValueError, match="align"):
            misaligned.append_subtree(height, leaves[0])
