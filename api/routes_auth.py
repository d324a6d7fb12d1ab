"""``/v1/auth``: logging in (officials, auditors, members, stations), tokens and TOTP.

Thin: each route translates JSON to an :class:`~api.auth.AuthService` call and back. Token
answers carry ``Cache-Control: no-store`` (RFC 6749 section 5.1). Failures are problem+json:
``invalid-credentials`` (401) for any failed login, ``account-locked`` (429, ``Retry-After``),
``too-many-requests`` (429, ``Retry-After``: 20 attempts per minute per client address and
action), ``unauthorized`` (401, ``WWW-Authenticate: Bearer``) for a bad access or refresh token.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import BaseModel, Field

import keys
from api.auth import (
    AccountHolderDep,
    ActorDep,
    AuthDep,
    GrantDep,
    TokenPair,
    client_address,
)
from keys.trustlist import record_to_jwk

router = APIRouter(prefix="/v1/auth", tags=["auth"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
StationId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
Phone = Annotated[str, Field(min_length=5, max_length=32, pattern=r"^\+?[0-9][0-9 -]*$")]
SixDigits = Annotated[str, Field(pattern=r"^[0-9]{6}$")]


class LoginRequest(BaseModel):
    username: Annotated[str, Field(min_length=1, max_length=128)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]
    totp: Annotated[str | None, Field(max_length=16)] = None


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105  (RFC 6750 token type)
    expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=256)]


class TotpSetupResponse(BaseModel):
    otpauth_uri: str


class TotpSetupRequest(BaseModel):
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class TotpConfirmRequest(BaseModel):
    code: SixDigits


class OtpRequest(BaseModel):
    phone: Phone


class OtpRequested(BaseModel):
    expires_in: int


class OtpVerifyRequest(BaseModel):
    phone: Phone
    code: SixDigits


class ChallengeRequest(BaseModel):
    station_id: StationId


class ChallengeResponse(BaseModel):
    challenge: str
    expires_in: int


class StationVerifyRequest(BaseModel):
    station_id: StationId
    challenge: Annotated[str, Field(min_length=1, max_length=64)]
    signature: Annotated[str, Field(min_length=1, max_length=128)]


class Me(BaseModel):
    role: str
    subject: str
    scope: str | None
    username: str | None = None  # officials and auditors: the account's login name


_client = client_address


def _tokens(pair: TokenPair, response: Response) -> TokenResponse:
    response.headers.update(NO_STORE)
    return TokenResponse(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post("/login", summary="Log an official or auditor in")
def login(body: LoginRequest, auth: AuthDep, request: Request, response: Response) -> TokenResponse:
    pair = auth.login(body.username, body.password, body.totp, _client(request))
    return _tokens(pair, response)


@router.post("/refresh", summary="Swap a refresh token for new tokens (the old one dies)")
def refresh(body: RefreshRequest, auth: AuthDep, response: Response) -> TokenResponse:
    return _tokens(auth.refresh(body.refresh_token), response)


@router.post("/logout", status_code=204, summary="End this session: its tokens stop working")
def logout(grant: GrantDep, auth: AuthDep) -> Response:
    auth.logout(grant)
    return Response(status_code=204)


@router.get("/me", summary="Who the access token speaks for")
def me(actor: ActorDep, auth: AuthDep) -> Me:
    username = auth.username_of(actor)
    return Me(role=actor.role.value, subject=actor.key_id, scope=actor.scope, username=username)


@router.get("/keys", summary="The api keys that sign access tokens, as a JWKS (public)")
def token_keys(auth: AuthDep, response: Response) -> dict[str, Any]:
    """Every ``api`` key of the keyring (docs/auth.md section 2): to verify an access token
    outside the server, take the key of its ``kid`` and check that it may have signed at the
    token's ``iat`` (``nbf``, ``exp``, ``revoked``, NumericDates, as in a trust list)."""
    response.headers["Cache-Control"] = "max-age=60"
    ring = auth.keyring
    return {"keys": [record_to_jwk(r) for r in ring.of_role(keys.Role.API)]}


@router.post("/totp/setup", summary="Start TOTP: the otpauth:// URI, shown once")
def totp_setup(
    body: TotpSetupRequest,
    actor: AccountHolderDep,
    auth: AuthDep,
    request: Request,
    response: Response,
) -> TotpSetupResponse:
    response.headers.update(NO_STORE)
    uri = auth.totp_setup(actor, body.password, _client(request))
    return TotpSetupResponse(otpauth_uri=uri)


@router.post("/totp/confirm", status_code=204, summary="Enable TOTP with a first code")
def totp_confirm(body: TotpConfirmRequest, actor: AccountHolderDep, auth: AuthDep) -> Response:
    auth.totp_confirm(actor, body.code)
    return Response(status_code=204)


@router.post(
    "/otp/request",
    status_code=202,
    summary="Send a member a one-time code (the same answer whether the phone is known)",
)
def otp_request(
    body: OtpRequest, auth: AuthDep, request: Request, background: BackgroundTasks
) -> OtpRequested:
    background.add_task(auth.otp_request(body.phone, _client(request)))
    return OtpRequested(expires_in=auth.policy.otp_ttl)


@router.post("/otp/verify", summary="Log a member in with their one-time code")
def otp_verify(
    body: OtpVerifyRequest, auth: AuthDep, request: Request, response: Response
) -> TokenResponse:
    return _tokens(auth.otp_verify(body.phone, body.code, _client(request)), response)


@router.post("/station/challenge", summary="A challenge for a station device to sign")
def station_challenge(
    body: ChallengeRequest, auth: AuthDep, request: Request, response: Response
) -> ChallengeResponse:
    response.headers.update(NO_STORE)
    challenge = auth.station_challenge(body.station_id, _client(request))
    return ChallengeResponse(challenge=challenge, expires_in=auth.policy.challenge_ttl)


@router.post("/station/verify", summary="Log a station in with its signed challenge")
def station_verify(
    body: StationVerifyRequest, auth: AuthDep, request: Request, response: Response
) -> TokenResponse:
    pair = auth.station_verify(body.station_id, body.challenge, body.signature, _client(request))
    return _tokens(pair, response)
