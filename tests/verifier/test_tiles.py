"""C2SP tlog-tiles: paths, the tiles of a tree, hashes read from tiles, entry bundles."""

from __future__ import annotations

import hashlib
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)
from verifier.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    decode_entry_bundle,
    encode_entry_bundle,
    encode_index,
    entries_path,
    parse_tile_path,
    tile_hash_at,
    tile_path,
    tiles_for_size,
)


def test_constants() -> None:
    assert (TILE_HEIGHT, TILE_WIDTH) == (8, 256)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "000"),
        (5, "005"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),
        (10**9, "x001/x000/x000/000"),
    ],
)
def test_encode_index(n: int, text: str) -> None:
    assert encode_index(n) == text


def test_paths() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 1, 17) == "tile/1/001.p/17"
    assert tile_path(63, 0, 255) == "tile/63/000.p/255"
    assert entries_path(273, 112) == "tile/entries/273.p/112"
    assert entries_path(1000) == "tile/entries/x001/000"
    for bad in [(-1, 0, 256), (64, 0, 256), (0, -1, 256), (0, 0, 0), (0, 0, 257)]:
        with pytest.raises(ValueError, match="must be"):
            tile_path(*bad)
    with pytest.raises(TypeError):
        tile_path(True, 0)


@settings(max_examples=200)
@given(
    st.one_of(st.none(), st.integers(0, 63)),
    st.integers(0, 10**15),
    st.integers(1, 256),
)
def test_paths_round_trip(level: int | None, index: int, width: int) -> None:
    path = entries_path(index, width) if level is None else tile_path(level, index, width)
    assert parse_tile_path(path) == (level, index, width)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile/0",
        "tile/0/",
        "tile/0/5",
        "tile/0/05",
        "tile/0/0005",
        "tile/0/x000/005",  # zero-padding group
        "tile/0/001/002",  # missing x
        "tile/0/x001",  # last group has an x
        "tile/00/001",  # leading zero in level
        "tile/64/001",  # level above 63
        "tile/-1/001",
        "tile/0/001.p/0",
        "tile/0/001.p/256",
        "tile/0/001.p/05",
        "tile/0/001.p/",
        "tile/0/001.p/1000",
        "tile/0/001/",
        "/tile/0/001",
        "prefix/tile/0/001",
        "tile/0/001\n",
        "tile/entries/x000/001",
        "tile/entrie/001",
        "tile/0/\u0661\u0662\u0663",  # Arabic-Indic digits
        "tile/0/001.p/1 ",
        "TILE/0/001",
    ],
)
def test_parse_tile_path_refuses_non_canonical(path: str) -> None:
    with pytest.raises(ValueError, match="tile"):
        parse_tile_path(path)


def test_tiles_for_70000_entries() -> None:
    """The C2SP tlog-tiles example."""
    tiles = tiles_for_size(70_000)
    level0_full = [(0, i, 256) for i in range(273)]
    assert tiles == [*level0_full, (0, 273, 112), (1, 0, 256), (1, 1, 17), (2, 0, 1)]
    paths = [tile_path(*t) for t in tiles[273:]]
    assert paths == ["tile/0/273.p/112", "tile/1/000", "tile/1/001.p/17", "tile/2/000.p/1"]


def test_tiles_for_small_sizes() -> None:
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [(0, 0, 1)]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1 tile
    # of width 1"
    assert tiles_for_size(256) == [(0, 0, 256), (1, 0, 1)]
    with pytest.raises(ValueError, match="tree size"):
        tiles_for_size(-1)


# --- hashes from tiles against a naive tree ---------------------------------------------------


def build_tiles(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """The tiles of the tree over ``leaves``, as a log would store them (partial tiles too)."""

    @cache
    def perfect(level: int, index: int) -> bytes:
        if level == 0:
            return leaf_hash(leaves[index])
        return hashlib.sha256(
            b"\x01" + perfect(level - 1, 2 * index) + perfect(level - 1, 2 * index + 1)
        ).digest()

    tiles = {}
    for tile_level, tile_index, width in tiles_for_size(len(leaves)):
        level = TILE_HEIGHT * tile_level
        first = tile_index * TILE_WIDTH
        tiles[tile_level, tile_index] = b"".join(perfect(level, first + i) for i in range(width))
    return tiles


@pytest.fixture(scope="module")
def tree() -> tuple[list[bytes], dict[tuple[int, int], bytes]]:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest()[: i % 40] for i in range(3001)]
    return leaves, build_tiles(leaves)


def test_tile_hash_at_matches_a_naive_tree(
    tree: tuple[list[bytes], dict[tuple[int, int], bytes]],
) -> None:
    leaves, tiles = tree
    hashes = [leaf_hash(d) for d in leaves]

    def read_tile(level: int, index: int) -> bytes:
        return tiles.get((level, index), b"")

    for level in range(12):
        size = 1 << level
        for index in range(len(leaves) // size):
            want = root_from_leaf_hashes(hashes[index * size : (index + 1) * size])
            assert tile_hash_at(level, index, read_tile) == want, (level, index)
    # Level 11 has a single complete subtree in 3,001 leaves; a second one would need more.
    with pytest.raises(ValueError, match="holds 11 hashes"):
        tile_hash_at(11, 1, read_tile)


def test_proofs_from_tiles_verify(tree: tuple[list[bytes], dict[tuple[int, int], bytes]]) -> None:
    leaves, tiles = tree
    n = len(leaves)

    def hash_at(level: int, index: int) -> bytes:
        return tile_hash_at(level, index, lambda lv, ix: tiles.get((lv, ix), b""))

    root = subtree_root(0, n, hash_at)
    assert root == root_from_leaf_hashes([leaf_hash(d) for d in leaves])
    for index in (0, 1, 255, 256, 1000, 2047, 2048, n - 1):
        verify_inclusion(
            leaf_hash(leaves[index]), index, n, inclusion_proof(index, n, hash_at), root
        )
    for m in (1, 255, 256, 257, 2048, n - 1):
        old_root = subtree_root(0, m, hash_at)
        verify_consistency(m, n, old_root, root, consistency_proof(m, n, hash_at))


def test_tile_hash_at_refuses_malformed_tiles() -> None:
    h = b"\x11" * 32
    with pytest.raises(ValueError, match="holds 2 hashes"):
        tile_hash_at(2, 0, lambda _level, _index: h * 2)
    with pytest.raises(ValueError, match="bytes long"):
        tile_hash_at(0, 0, lambda _level, _index: h + b"\0")
    with pytest.raises(ValueError, match="bytes long"):
        tile_hash_at(0, 0, lambda _level, _index: h * 257)
    with pytest.raises(ValueError, match="must be"):
        tile_hash_at(-1, 0, lambda _level, _index: h)
    # Index 300 at level 0 is hash 44 of tile 1.
    seen = []

    def read_tile(level: int, index: int) -> bytes:
        seen.append((level, index))
        return b"".join(i.to_bytes(32, "big") for i in range(45))

    assert tile_hash_at(0, 300, read_tile) == (44).to_bytes(32, "big")
    assert seen == [(0, 1)]


# --- entry bundles ----------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=256))
def test_entry_bundles_round_trip(entries: list[bytes]) -> None:
    data = encode_entry_bundle(entries)
    assert len(data) == sum(2 + len(e) for e in entries)
    assert decode_entry_bundle(data) == entries


def test_entry_bundle_format() -> None:
    assert encode_entry_bundle([b"ab", b"", b"c"]) == b"\x00\x02ab\x00\x00\x00\x01c"
    big = b"x" * 0xFFFF
    assert decode_entry_bundle(encode_entry_bundle([big])) == [big]
    with pytest.raises(ValueError, match="over 65535"):
        encode_entry_bundle([big + b"x"])
    with pytest.raises(ValueError, match="at most 256"):
        encode_entry_bundle([b""] * 257)
    with pytest.raises(ValueError, match="more than 256"):
        decode_entry_bundle(b"\x00\x00" * 257)


@pytest.mark.parametrize(
    "data", [b"\x00", b"\x00\x02a", b"\x00\x01a\x00", b"\x00\x01a\x00\x05abcd", b"\xff\xff"]
)
def test_entry_bundle_refuses_truncation_and_trailing_bytes(data: bytes) -> None:
    with pytest.raises(ValueError, match="entry"):
        decode_entry_bundle(data)
