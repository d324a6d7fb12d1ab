"""A Python holder of a station credential, for tests, benchmarks and the CLI.

The real holder is the member app (a PWA whose holder key is a non-extractable WebCrypto key);
this is the same protocol in Python: it keeps the holder key, the credential and its
disclosures, and makes presentations that disclose only what a program needs.

QR rendering uses the ``qrcode`` package (a project dependency, imported only when a QR is
drawn, so the rest of ``verifier`` runs without it). The text is encoded in alphanumeric mode
(base45 is that mode's alphabet, 5.5 bits a character) at error correction Q. PNGs come from
``qrcode``'s pure-Python writer when ``pypng`` is installed, otherwise from a small writer
here (zlib and struct only), so no Pillow is needed either way.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import keys
from verifier.credential import (
    IssuedCredential,
    UnverifiedCredential,
    decode_credential,
    present,
)

__all__ = ["QR_ALPHANUMERIC", "Wallet", "qr_matrix", "qr_png", "qr_version"]

QR_ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
_LEVELS = {"L": 1, "M": 0, "Q": 3, "H": 2}  # qrcode.constants.ERROR_CORRECT_*


class Wallet:
    """A holder key, one credential and its disclosures (group -> disclosure bytes).

    Raises (on construction):
        CredentialMalformed: ``token`` is not a credential.
        ValueError: ``holder_key`` is not the credential's holder key.
    """

    __slots__ = ("_credential", "_disclosures", "_holder_key", "_token")

    def __init__(
        self, holder_key: keys.PrivateKey, token: bytes, disclosures: Mapping[str, bytes]
    ) -> None:
        credential = decode_credential(token)
        if credential.holder_key != holder_key.public_key:
            raise ValueError("holder_key is not the holder key this credential names")
        self._holder_key = holder_key
        self._token = bytes(token)
        self._credential = credential
        self._disclosures = dict(disclosures)

    @classmethod
    def from_issued(cls, holder_key: keys.PrivateKey, issued: IssuedCredential) -> Wallet:
        return cls(holder_key, issued.token, issued.disclosures)

    @property
    def token(self) -> bytes:
        return self._token

    @property
    def credential(self) -> UnverifiedCredential:
        """The credential's claims, decoded but not verified (for display). The credential does
        not name its issuer: the issuing union is the trust-list scope of the key its short
        ``kid`` names, and ``home_union`` is ``None`` when the member belongs to that union."""
        return self._credential

    @property
    def groups(self) -> frozenset[str]:
        """The groups this wallet can disclose."""
        return frozenset(self._disclosures)

    def presentation(
        self, program_groups: Iterable[str], now: datetime, challenge: bytes | None = None
    ) -> str:
        """The QR text for a program that looks at ``program_groups``: only those of them the
        member has are disclosed (none for a universal program). A group the member lacks is
        simply not disclosed; the station's eligibility rule decides what that means.
        """
        wanted = set(program_groups) & self._disclosures.keys()
        chosen = [self._disclosures[group] for group in sorted(wanted)]
        return present(
            self._token, self._holder_key, disclosures=chosen, now=now, challenge=challenge
        )


def _level(level: str) -> int:
    try:
        return _LEVELS[level]
    except KeyError:
        raise ValueError(
            f"error correction level must be one of L, M, Q, H, not {level!r}"
        ) from None


def _qr(text: str, level: str, border: int = 4) -> Any:
    if not text or not set(text) <= QR_ALPHANUMERIC:
        raise ValueError("the text must be non-empty and in the QR alphanumeric alphabet")
    import qrcode  # noqa: PLC0415 - optional at import time: see the module docstring
    from qrcode.util import MODE_ALPHA_NUM, QRData  # noqa: PLC0415

    code = qrcode.QRCode(error_correction=_level(level), border=border)
    code.add_data(QRData(text, mode=MODE_ALPHA_NUM))
    code.make(fit=True)
    return code


def qr_version(text: str, level: str = "Q") -> int:
    """The smallest QR version (1-40) that holds ``text`` in alphanumeric mode at ``level``.

    Raises:
        ValueError: ``text`` is empty or has a character outside the alphanumeric alphabet,
            or an unknown ``level``.
    """
    return int(_qr(text, level).version)


def qr_matrix(text: str, level: str = "Q", border: int = 4) -> list[list[bool]]:
    """The QR modules (True = dark), quiet zone of ``border`` modules included."""
    return [[bool(m) for m in row] for row in _qr(text, level, border).get_matrix()]


def _png(rows: Sequence[Sequence[bool]], scale: int) -> bytes:
    """A 1-bit greyscale PNG (PNG spec: IHDR, one IDAT, IEND; filter 0 on every row)."""
    width = len(rows[0]) * scale
    raw = bytearray()
    for row in rows:
        bits = "".join(("0" if dark else "1") * scale for dark in row)  # 1 = white
        bits += "1" * (-len(bits) % 8)
        line = b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")
        raw += line * scale

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, len(rows) * scale, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )


def qr_png(text: str, path: str | Path, *, level: str = "Q", scale: int = 4) -> Path:
    """Write ``text`` as a QR code PNG (alphanumeric mode, ``level``, ``scale`` pixels a
    module, 4-module quiet zone) to ``path`` and return the path.

    Raises:
        ValueError: as :func:`qr_version`, or ``scale`` < 1.
    """
    if scale < 1:
        raise ValueError("scale must be at least 1")
    path = Path(path)
    code = _qr(text, level)
    try:
        from qrcode.compat.png import PngWriter  # noqa: PLC0415
    except ImportError:  # pragma: no cover - qrcode 8 always has the module
        PngWriter = None
    if PngWriter is not None:  # pragma: no cover - pypng is not installed here
        from qrcode.image.pure import PyPNGImage  # noqa: PLC0415

        code.box_size = scale
        with path.open("wb") as out:
            code.make_image(image_factory=PyPNGImage).save(out)
        return path
    path.write_bytes(_png(code.get_matrix(), scale))
    return path
