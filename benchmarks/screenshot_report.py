"""Open an experiment report (`crossrec report`) in headless Chromium with the network off and save
a screenshot of its first screen (and optionally the full page).

    python benchmarks/screenshot_report.py RUN_DIR/report/report.html benchmarks/results/report_anime-mal.png

Needs Debian's chromium + chromium-driver (as the browser test). Prints what a reader would stumble
on: images that did not load, and any request the page tried to make to the network.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(page: str, png: str, full: str | None = None) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
    ):  # no network: offline proof
        opts.add_argument(arg)
    b = webdriver.Chrome(service=DriverService(executable_path=shutil.which("chromedriver")), options=opts)
    try:
        b.get(Path(page).resolve().as_uri())
        broken = b.execute_script("return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
        n = b.execute_script("return document.images.length")
        remote = b.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(u => !u.startsWith('data:') && !u.startsWith('file:'))"
        )
        print(f"{n} images, {broken} not loaded, {len(remote)} network requests {remote}")
        b.save_screenshot(png)
        if full:
            height = b.execute_script("return document.body.scrollHeight")
            b.set_window_size(1280, min(int(height) + 100, 16000))
            b.save_screenshot(full)
        if broken or remote:
            raise SystemExit(1)
    finally:
        b.quit()


if __name__ == "__main__":
    main(*sys.argv[1:4])
