"""Regenerate docs/figures/app.png: the web page analysing its shipped glioma example, with the expert outline.

    python docs/figures/screenshot.py            # needs the app extra, playwright and chromium

Starts ``braintumor app`` on a free loopback port, picks the example in headless Chromium, waits for the
result and saves a viewport screenshot (PNG, palette-reduced to stay under 300 KB).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

OUT = Path(__file__).resolve().parent / "app.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "braintumor.cli", "app", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(url)
            expect(page.get_by_text("not a medical device")).to_be_visible(timeout=60_000)
            page.locator("[data-testid=stSelectbox]").first.click()
            page.get_by_role("option", name="glioma").click()
            expect(page.get_by_text("Dice with the expert mask")).to_be_visible(timeout=60_000)
            time.sleep(2)  # images finish loading
            page.get_by_text("Example: glioma").scroll_into_view_if_needed()
            page.mouse.wheel(0, 330)  # the heading at the top, the metrics below the images in view
            time.sleep(1)
            page.screenshot(path=str(OUT))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    Image.open(OUT).convert("RGB").quantize(128).save(OUT, optimize=True)
    print(f"{OUT} ({OUT.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
