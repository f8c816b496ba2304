"""A screenshot of `costplan serve`'s page in Debian's headless Chromium, to see what a person sees.

    python benchmarks/serve_screenshot.py [--out benchmarks/output/serve.png] [--query "model=7b&..."]

Needs chromium and chromium-driver (apt) and the test extra (selenium). The page is loaded with the
scenario in its URL, and the shot is taken once every answer has been drawn.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import serving  # noqa: E402

QUERY = "model=7b&method=lora&gpu=h100&tokens=100M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/output/serve.png"))
    parser.add_argument("--query", default=QUERY, help="the scenario, as in a shared link")
    parser.add_argument("--width", type=int, default=1300)
    args = parser.parse_args()
    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver_path:
        raise SystemExit("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    with serving() as base, tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--no-first-run",
                         "--disable-sync", f"--user-data-dir={profile}", f"--window-size={args.width},1200",
                         "--hide-scrollbars"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        try:
            driver.get(f"{base}/?{args.query}")
            WebDriverWait(driver, 120).until(lambda d: d.execute_script(
                "return document.body.dataset.busy === 'false' && document.body.dataset.generation !== '0'"))
            size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {  # the whole page, not just the window
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_bytes(base64.b64decode(shot["data"]))
        finally:
            driver.quit()
    print(f"screenshot of {base}/?{args.query}: {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
