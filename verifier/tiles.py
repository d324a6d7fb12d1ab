"""C2SP tlog-tiles: tile paths, which tiles a tree has, hashes from tiles, entry bundles.

A tile is 256 consecutive hashes of one "tile level" L, which is Merkle level 8·L: hash i of
tile N at level L is MTH(D[(N·256 + i)·256**L : (N·256 + i + 1)·256**L]). The rightmost tile of
each level is partial (``.p/<W>``, width 1..255) until it fills up. An entry bundle holds the
entries behind one level-0 tile, each as a big-endian uint16 length and its bytes.

Contracts: everything here is pure string, integer and bytes arithmetic. Malformed input
(a path that is not canonical, a tile too short for the hash asked of it, an entry bundle with
trailing bytes) raises ``ValueError``; these are format errors, not verification failures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeAlias

from verifier.merkle import HASH_SIZE, root_from_leaf_hashes

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_TILE_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF
"""An entry in a bundle has a uint16 length prefix."""

__all__ = [
    "MAX_ENTRY_SIZE",
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "encode_index",
    "entries_path",
    "parse_tile_path",
    "tile_hash_at",
    "tile_path",
    "tiles_for_size",
]

ReadTile: TypeAlias = Callable[[int, int], bytes]
"""``read_tile(tile_level, tile_index)``: the stored hashes of that tile, concatenated (a full
tile or the widest partial one the caller has)."""


def _require_int(value: int, what: str, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{what} must be {bound}, got {value}")


def encode_index(n: int) -> str:
    """The tile index as path elements: 1234067 -> ``x001/x234/067``, 5 -> ``005``.

    Raises:
        ValueError: ``n`` is negative.
    """
    _require_int(n, "tile index", 0)
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def _suffix(width: int) -> str:
    _require_int(width, "tile width", 1, TILE_WIDTH)
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]``, e.g. ``tile/0/x001/x234/067`` or ``tile/1/001.p/17``.

    Raises:
        ValueError: level outside 0..63, negative index, width outside 1..256.
    """
    _require_int(level, "tile level", 0, MAX_TILE_LEVEL)
    return f"tile/{level}/{encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """``tile/entries/<N>[.p/<W>]``, the entry bundle behind level-0 tile ``index``.

    Raises:
        ValueError: negative index, width outside 1..256.
    """
    return f"tile/entries/{encode_index(index)}{_suffix(width)}"


# Canonical forms only: a level without leading zeros, index groups of exactly three digits
# with an "x" on all but the last, a width 1..255 without leading zeros. [0-9] rather than \d,
# which would also match other scripts' digits.
_TILE_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)"
    r"/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


def parse_tile_path(path: str) -> tuple[int | None, int, int]:
    """Inverse of :func:`tile_path` / :func:`entries_path`: ``(level or None, index, width)``.

    Only the canonical spelling is accepted, so that one tile has exactly one path.

    Raises:
        ValueError: anything else (leading zeros, ``x000/`` padding groups, level above 63,
            ``.p/0``, ``.p/256``, a prefix, a trailing slash, ...).
    """
    match = _TILE_PATH.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise ValueError(f"not a canonical tile path: {path!r}")
    level_text, index_text, width_text = match.group("level", "index", "width")
    level = None if level_text == "entries" else int(level_text)
    if level is not None and level > MAX_TILE_LEVEL:
        raise ValueError(f"tile level {level} is above {MAX_TILE_LEVEL}")
    if index_text.startswith("x000/"):
        raise ValueError(f"tile index is zero-padded with a group too many: {path!r}")
    index = int(index_text.replace("x", "").replace("/", ""))
    if width_text is None:
        return level, index, TILE_WIDTH
    width = int(width_text)
    if width >= TILE_WIDTH:
        raise ValueError(f"partial tile width must be 1..255, got {width}")
    return level, index, width


def tiles_for_size(tree_size: int) -> list[tuple[int, int, int]]:
    """Every ``(level, index, width)`` tile of a tree of ``tree_size`` leaves, level by level.

    Level L has ``tree_size >> 8L`` hashes: that many // 256 full tiles and, if the remainder is
    not zero, one partial tile of that width. The entry bundles mirror level 0.
    70,000 leaves: 273 full level-0 tiles, 0/273.p/112, 1/000, 1/001.p/17, 2/000.p/1.

    Raises:
        ValueError: ``tree_size`` is negative.
    """
    _require_int(tree_size, "tree size", 0)
    tiles: list[tuple[int, int, int]] = []
    level, count = 0, tree_size
    while count:
        full, partial = divmod(count, TILE_WIDTH)
        tiles.extend((level, i, TILE_WIDTH) for i in range(full))
        if partial:
            tiles.append((level, full, partial))
        level += 1
        count >>= TILE_HEIGHT
    return tiles


def tile_hash_at(level: int, index: int, read_tile: ReadTile) -> bytes:
    """The hash of the perfect subtree at Merkle ``level`` and ``index``, read from tiles.

    Merkle level 8·L + r (r = 0..7) is 2**r consecutive hashes of one tile at tile level L
    (they never straddle two tiles, since 2**r divides 256 and the run is aligned); the answer is
    their perfect-tree root, at most 127 node hashes. This is how the ledger implements
    :data:`verifier.merkle.HashAt`.

    Raises:
        ValueError: a negative level or index, or the tile returned is malformed (not a multiple
            of 32 bytes, wider than 256 hashes) or too narrow to hold the hashes needed.
    """
    _require_int(level, "Merkle level", 0, TILE_HEIGHT * (MAX_TILE_LEVEL + 1) - 1)
    _require_int(index, "subtree index", 0)
    tile_level, r = divmod(level, TILE_HEIGHT)
    first = index << r  # index of the first hash at Merkle level 8 * tile_level
    tile_index, offset = divmod(first, TILE_WIDTH)
    count = 1 << r
    data = read_tile(tile_level, tile_index)
    if len(data) % HASH_SIZE or len(data) > TILE_WIDTH * HASH_SIZE:
        raise ValueError(f"tile {tile_path(tile_level, tile_index)} is {len(data)} bytes long")
    end = (offset + count) * HASH_SIZE
    if len(data) < end:
        raise ValueError(
            f"tile {tile_path(tile_level, tile_index)} holds {len(data) // HASH_SIZE} hashes; "
            f"level {level} index {index} needs {offset + count}"
        )
    if count == 1:
        return bytes(data[offset * HASH_SIZE : end])
    return root_from_leaf_hashes(
        [bytes(data[i : i + HASH_SIZE]) for i in range(offset * HASH_SIZE, end, HASH_SIZE)]
    )


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """The entries, each as a big-endian uint16 length followed by its bytes.

    Raises:
        ValueError: an entry is over 65,535 bytes, or there are more than 256 entries.
    """
    if len(entries) > TILE_WIDTH:
        raise ValueError(f"an entry bundle holds at most {TILE_WIDTH} entries, got {len(entries)}")
    parts: list[bytes] = []
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_SIZE:
            raise ValueError(f"entry {i} is {len(entry)} bytes, over {MAX_ENTRY_SIZE}")
        parts.append(len(entry).to_bytes(2, "big"))
        parts.append(bytes(entry))
    return b"".join(parts)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """Inverse of :func:`encode_entry_bundle`.

    Raises:
        ValueError: a length prefix or an entry is cut short (trailing garbage), or there are
            more than 256 entries.
    """
    view = memoryview(data)
    entries: list[bytes] = []
    pos = 0
    while pos < len(view):
        if len(view) - pos < 2:
            raise ValueError(f"entry bundle has a stray byte at offset {pos}")
        size = int.from_bytes(view[pos : pos + 2], "big")
        pos += 2
        if len(view) - pos < size:
            raise ValueError(f"entry {len(entries)} needs {size} bytes, {len(view) - pos} left")
        entries.append(bytes(view[pos : pos + size]))
        pos += size
        if len(entries) > TILE_WIDTH:
            raise ValueError(f"entry bundle holds more than {TILE_WIDTH} entries")
    return entries
