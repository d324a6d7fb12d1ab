"""Public, unauthenticated routes of the log: what an auditor or a mirror reads.

They reveal no personal data: entries hold pseudonyms and commitments only. ``/v1/log/...`` is
our JSON/NDJSON API; ``/tlog/...`` is the C2SP tlog-tiles static layout, so standard tools can
mirror the log.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from api.deps import ServicesDep
from api.problems import Problem
from verifier.tiles import TILE_WIDTH, encode_entry_bundle, parse_tile_path

router = APIRouter(tags=["public: log"])

TEXT = "text/plain; charset=utf-8"
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
NonNegative = Annotated[int, Query(ge=0, le=2**62)]


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


@router.get("/v1/log/checkpoint", summary="The latest signed checkpoint (C2SP signed note)")
def checkpoint(services: ServicesDep) -> Response:
    latest = services.reader.latest_checkpoint()
    if latest is None:
        raise Problem("not-found", "no checkpoint has been signed yet")
    # tlog-tiles: a checkpoint must not be cached for more than a few seconds.
    return Response(latest.note, media_type=TEXT, headers={"Cache-Control": "max-age=1"})


@router.get("/v1/log/public-key", summary="The log's note verifier key")
def public_key(services: ServicesDep) -> Response:
    return Response(services.log_verifier().key_string() + "\n", media_type=TEXT)


@router.get(
    "/v1/log/entries",
    summary="Exact entry bytes, one per line (at most 1,000 per request)",
    response_class=Response,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def entries(services: ServicesDep, start: NonNegative, end: NonNegative) -> Response:
    data = services.reader.entries(start, end)
    return Response(b"".join(d + b"\n" for d in data), media_type="application/x-ndjson")


@router.get("/v1/log/proof/inclusion", summary="RFC 9162 inclusion proof")
def inclusion(services: ServicesDep, index: NonNegative, tree_size: NonNegative) -> dict[str, Any]:
    proof = services.reader.inclusion_proof(index, tree_size)
    return {"index": index, "tree_size": tree_size, "hashes": _b64(proof)}


@router.get("/v1/log/proof/consistency", summary="RFC 9162 consistency proof")
def consistency(services: ServicesDep, first: NonNegative, second: NonNegative) -> dict[str, Any]:
    proof = services.reader.consistency_proof(first, second)
    return {"first": first, "second": second, "hashes": _b64(proof)}


@router.get("/v1/log/receipt/{index}", summary="Proof bundle of one entry, verifiable offline")
def receipt(services: ServicesDep, index: Annotated[int, Path(ge=0, le=2**62)]) -> Response:
    return Response(services.reader.receipt(index).to_json(), media_type="application/json")


@router.get("/tlog/checkpoint", summary="C2SP tlog-tiles checkpoint")
def tlog_checkpoint(services: ServicesDep) -> Response:
    return checkpoint(services)


@router.get("/tlog/tile/{path:path}", summary="C2SP tlog-tiles hash and entry tiles")
def tlog_tile(services: ServicesDep, path: str) -> Response:
    try:
        level, index, width = parse_tile_path("tile/" + path)
    except ValueError as e:
        raise Problem("not-found", f"not a tile path: {e}") from None
    size = services.reader.size()
    if level is None:
        first = index * TILE_WIDTH
        if first + width > size:
            raise Problem("not-found", "the log does not hold that entry tile")
        bundle = encode_entry_bundle(services.reader.entries(first, first + width))
        headers = IMMUTABLE if width == TILE_WIDTH else {}
        return Response(bundle, media_type="application/octet-stream", headers=headers)
    data = services.reader.tile(level, index)
    if len(data) < width * 32:
        raise Problem("not-found", "the log does not hold that tile")
    headers = IMMUTABLE if width == TILE_WIDTH else {}
    return Response(data[: width * 32], media_type="application/octet-stream", headers=headers)
