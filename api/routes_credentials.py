"""Credentials, status lists and the trust list: what a member's phone and a station fetch.

- ``POST /v1/members/me/credential``: the member app registers its holder key (an Ed25519 JWK
  made with WebCrypto) and receives a new station credential, the old one revoked.
- ``GET /v1/members/me/credential``: the current one again (token and disclosures).
- ``GET /v1/members/me/credential/sd-jwt``: the same membership as an SD-JWT VC (docs/sd-jwt.md),
  bound to the same holder key and sharing the same status-list entry.
- ``GET /v1/members/{id}/credentials``: issuance history (hashes, issuers, validity, revocation).
- ``GET /v1/status-lists/{issuer}``: the issuer's Token Status List (``statuslist+jwt``), public.
- ``GET /v1/trust-list``: the keys stations trust, signed by the national root key, public.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

import keys
from api.auth import MemberDep
from api.deps import ServicesDep
from api.routes_members import ReaderDep
from ledger import credentials as c
from ledger import members as m
from verifier.sdjwt import issue_sd_jwt

router = APIRouter(tags=["credentials"])

VCT = "urn:unionledger:vct:membership:1"
NO_STORE = {"Cache-Control": "no-store"}


class HolderKey(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "holder_key": {
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                    }
                }
            ]
        },
    )
    holder_key: dict[str, str] = Field(description="The holder's Ed25519 public key as a JWK")


class CredentialOut(BaseModel):
    credential: str = Field(description="base64url of the credential (untagged COSE_Sign1)")
    disclosures: dict[str, str] = Field(description="group name -> base64url disclosure")
    issuer: str
    union: str
    member_id: str
    status_index: int
    iat: str
    exp: str
    renew_after: str = Field(description="ask for a fresh credential after this time")
    hash: str = Field(description="hex SHA-256 of the credential bytes, as on the ledger")


class CredentialEvent(BaseModel):
    hash: str
    issuer: str
    status_index: int
    issued_at: str
    expires_at: str
    revoked_at: str | None
    reason: str | None


def _out(issued: c.Issued) -> CredentialOut:
    row = issued.row
    renew = datetime.fromisoformat(row.expires_at) - c.RENEW_BEFORE
    return CredentialOut(
        credential=keys.b64url_encode(issued.token),
        disclosures={g: keys.b64url_encode(d) for g, d in sorted(issued.disclosures.items())},
        issuer=row.issuer,
        union=issued.home_union,
        member_id=row.member_id,
        status_index=row.status_index,
        iat=row.issued_at,
        exp=row.expires_at,
        renew_after=renew.strftime("%Y-%m-%dT%H:%M:%SZ"),
        hash=row.credential_hash,
    )


@router.post(
    "/v1/members/me/credential",
    status_code=201,
    summary="Register a holder key and receive a new station credential",
)
def register_holder(
    services: ServicesDep, actor: MemberDep, body: HolderKey, response: Response
) -> CredentialOut:
    holder = c.holder_key_from_jwk(body.holder_key)
    issued = services.sequencer.execute(
        lambda tx: services.credentials.issue(tx, actor, actor.key_id, holder)
    )
    response.headers.update(NO_STORE)
    return _out(issued)


@router.get("/v1/members/me/credential", summary="Your current station credential")
def my_credential(services: ServicesDep, actor: MemberDep, response: Response) -> CredentialOut:
    with services.engine.connect() as conn:
        issued = services.credentials.fetch(conn, actor.key_id)
    response.headers.update(NO_STORE)
    return _out(issued)


@router.get(
    "/v1/members/me/credential/sd-jwt",
    summary="Your membership as an IETF SD-JWT VC (for wallets and online exchange)",
    response_class=Response,
    responses={200: {"content": {"application/dc+sd-jwt": {}}}},
)
def my_sd_jwt(services: ServicesDep, actor: MemberDep) -> Response:
    with services.engine.connect() as conn:
        issued = services.credentials.fetch(conn, actor.key_id)
        holder = services.credentials.holder_key(conn, issued.row)
    row = issued.row
    record = services.keyring.current(
        keys.Role.ISSUER, keys.utc_now(), scope=row.issuer
    )  # the same union signs both forms
    token = issue_sd_jwt(
        issuer_key=services.keyring.private_key(record.kid),
        kid=record.kid,
        issuer=row.issuer,
        vct=VCT,
        member_id=row.member_id,
        home_union=issued.home_union,
        holder_jwk=holder.to_jwk(),
        groups=sorted(issued.disclosures),
        iat=datetime.fromisoformat(row.issued_at),
        exp=datetime.fromisoformat(row.expires_at),
        status_index=row.status_index,
        status_uri=status_list_uri(services, row.issuer),
    )
    return Response(token, media_type="application/dc+sd-jwt", headers=NO_STORE)


@router.get(
    "/v1/members/{member_id}/credentials",
    summary="A member's credentials: hashes, issuers, validity and revocations",
)
def credential_history(
    services: ServicesDep, actor: ReaderDep, member_id: Annotated[str, Path(max_length=32)]
) -> list[CredentialEvent]:
    with services.engine.connect() as conn:
        m.visible_member(conn, actor, member_id)
        rows = c.credential_history(conn, member_id)
    return [
        CredentialEvent(
            hash=r.credential_hash,
            issuer=r.issuer,
            status_index=r.status_index,
            issued_at=r.issued_at,
            expires_at=r.expires_at,
            revoked_at=r.revoked_at,
            reason=r.reason,
        )
        for r in rows
    ]


def status_list_uri(services: ServicesDep, issuer: str) -> str:
    return f"{services.settings.public_url}/v1/status-lists/{issuer}"


@router.get(
    "/v1/status-lists/{issuer}",
    tags=["public"],
    summary="An issuer's Token Status List (1 bit per credential; 1 = revoked)",
    response_class=Response,
    responses={200: {"content": {"application/statuslist+jwt": {}}}},
)
def status_list(services: ServicesDep, issuer: Annotated[str, Path(max_length=32)]) -> Response:
    with services.engine.connect() as conn:
        token = services.credentials.status_list(
            conn, issuer, status_list_uri(services, issuer), keys.utc_now()
        )
    return Response(
        token,
        media_type="application/statuslist+jwt",
        headers={"Cache-Control": "public, max-age=60"},
    )


@router.get(
    "/v1/trust-list",
    tags=["public"],
    summary="The keys stations trust (issuers, log, stations), signed by the root key",
    response_class=Response,
    responses={200: {"content": {"application/jwt": {}}}},
)
def trust_list(services: ServicesDep) -> Response:
    token = services.credentials.trust_list(keys.utc_now())
    return Response(
        token, media_type="application/jwt", headers={"Cache-Control": "public, max-age=300"}
    )
