"""The union's join QR (一键入会): an SVG that a real decoder (zxing-cpp) reads back as the
address of the member app's join page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import keys
from api.app import create_app
from api.bootstrap import Province, init_data_dir, seed_tree
from api.settings import Settings
from ledger import unions
from ledger.domain import SYSTEM

PASS = "join qr tests passphrase"
_RECT = re.compile(r"M(\d+),(\d+)H(\d+)V(\d+)H(\d+)z")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings.load(
        data_dir=tmp_path / "data", environ={"UNIONLEDGER_KEY_PASSPHRASE": PASS}
    )
    init_data_dir(settings, keys.utc_now(), kdf=keys.KdfParams.fastest())
    app = create_app(settings)
    seed_tree(
        app.state.services.sequencer, [Province("110000", "北京市", "Beijing", "北京市总工会")]
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _raster(svg: str, scale: int = 6) -> memoryview:
    """The SVG's squares (qrcode's SvgPathImage draws one ``M x,y H V H z`` per dark module)
    as an 8-bit grey image, white quiet zone included."""
    size = int(re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).group(1))  # type: ignore[union-attr]
    pixels = bytearray([255]) * (size * scale) ** 2
    for x0, y0, x1, y1, _ in (map(int, m) for m in _RECT.findall(svg)):
        for y in range(y0 * scale, y1 * scale):
            row = y * size * scale
            pixels[row + x0 * scale : row + x1 * scale] = bytes((x1 - x0) * scale)
    return memoryview(bytes(pixels)).cast("B", (size * scale, size * scale))


def test_the_join_qr_decodes_to_the_join_page(client: TestClient) -> None:
    import zxingcpp  # a dev dependency: real QR decoding, never skipped

    with client.app.state.services.engine.connect() as conn:  # type: ignore[attr-defined]
        union = unions.get_union(conn, "110000")
    assert union is not None
    assert union.join_code
    response = client.get(f"/v1/join/{union.join_code}/qr.svg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    qr = zxingcpp.BarcodeFormat.QRCode
    found = [b.text for b in zxingcpp.read_barcodes(_raster(response.text), formats=qr)]
    assert found == [f"http://testserver/join/{union.join_code}"]
    assert response.headers["x-join-target"] == found[0]


def test_no_qr_for_an_unknown_or_closed_union(client: TestClient) -> None:
    missing = client.get("/v1/join/0000000000/qr.svg")
    assert missing.status_code == 404
    assert missing.json()["type"] == "/problems/unknown-join-code"
    sequencer = client.app.state.services.sequencer  # type: ignore[attr-defined]
    sequencer.execute(
        lambda tx: unions.create_union(
            tx, SYSTEM, code="G-X", name="某工会", kind="enterprise", parent="110000"
        )
    )
    with client.app.state.services.engine.connect() as conn:  # type: ignore[attr-defined]
        closing = unions.get_union(conn, "G-X")
    assert closing is not None
    assert client.get(f"/v1/join/{closing.join_code}/qr.svg").status_code == 200
    sequencer.execute(lambda tx: unions.close_union(tx, SYSTEM, code="G-X"))
    assert client.get(f"/v1/join/{closing.join_code}/qr.svg").status_code == 404
