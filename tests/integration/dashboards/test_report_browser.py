"""The journey report rendered by headless Chromium: a real picture with the charts in it.

The report of the replayed traffic is written by ``journey report``, screenshotted and
DOM-dumped by ``/usr/bin/chromium`` with networking features off, and the PNG is decoded
with the standard library (zlib + the PNG filters) to check the page is not blank and
that the chart colours were painted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest
from dashboard_support import run_journey

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH, HEIGHT = 1400, 2200
#: Colours the charts must have painted: awareness, consideration, purchase, converted, drop.
CHART_COLOURS = {
    (0x4C, 0x78, 0xA8),
    (0x72, 0xB7, 0xB2),
    (0xF5, 0x85, 0x18),
    (0x54, 0xA2, 0x4B),
    (0xE4, 0x57, 0x56),
}


def chromium(*args: str, profile: Path, timeout_s: float = 120.0) -> str:
    """Run headless Chromium with the fixed flags; its stdout. Fails if it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install it (Debian: apt-get install chromium; "
            "`make test` installs it) to render the report in a browser"
        )
    proc = subprocess.Popen(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Chromium forks helpers: stop the whole group on timeout
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        pytest.fail(f"chromium {' '.join(args)} did not finish within {timeout_s:.0f} s")
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{err.decode()[-3000:]}"
    return out.decode("utf-8", errors="replace")


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB or RGBA non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlace")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b, c = previous[i], previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                row[i] = (row[i] + pred) & 0xFF
        previous = row
        rgb = row if bpp == 3 else bytes(v for i, v in enumerate(row) if i % 4 != 3)
        rows.append(bytes(rgb))
    return width, height, rows


@pytest.fixture(scope="module")
def report_file(replayed_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the replayed traffic, written by the real command."""
    out = tmp_path_factory.mktemp("browser") / "report.html"
    run_journey("report", "--embedded", str(replayed_folder), "--out", str(out))
    return out


def test_screenshot_is_a_real_picture_with_the_charts(report_file: Path, tmp_path: Path) -> None:
    """The screenshot is not blank: many colours, mostly not white, chart colours painted."""
    png = tmp_path / "report.png"
    chromium(f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={png}", report_file.as_uri(),
             profile=tmp_path / "profile")  # fmt: skip
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    colours: Counter[tuple[int, int, int]] = Counter()
    for row in rows[::2]:
        for x in range(0, len(row), 6):
            colours[(row[x], row[x + 1], row[x + 2])] += 1
    sampled = sum(colours.values())
    white = colours[(255, 255, 255)]
    assert len(colours) > 200, f"only {len(colours)} distinct colours: a blank page?"
    assert white < 0.8 * sampled, f"{white / sampled:.0%} of the page is white"
    missing = {c for c in CHART_COLOURS if colours[c] < 50}
    assert not missing, f"chart colours not painted: {sorted(missing)}"


def test_charts_survive_rendering(report_file: Path, tmp_path: Path) -> None:
    """After Chromium parses and lays out the page, all six SVG charts and their marks exist."""
    dom = chromium("--dump-dom", report_file.as_uri(), profile=tmp_path / "profile")
    assert dom.count("<svg") == 6
    for chart in ("funnel", "sankey", "dropoff", "time_on_page", "channels", "trend"):
        assert f'data-chart="{chart}"' in dom, chart
    assert dom.count('class="sankey-link"') >= 6
    assert dom.count('class="funnel-bar"') == 4
    assert "Customer journey report" in dom
