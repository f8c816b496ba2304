"""Render a generated report in headless Chromium and save a screenshot, to check it displays.

    python benchmarks/report_screenshot.py [--out benchmarks/output]

Needs Debian's chromium (apt-get install chromium); the report is written to OUT/report first.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/output"))
    args = parser.parse_args()
    from costplan.report import build

    files = build("7b", tokens=100e6, out=args.out / "report", deadline_seconds=48 * 3600)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    shot = args.out / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--window-size=1200,2400", f"--screenshot={shot.resolve()}",
                        files.html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    print(f"screenshot of {files.html}: {shot} ({shot.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
