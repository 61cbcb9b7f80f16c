"""The README's screenshot of the browser live view: the demo clip in real time, captured by headless
Chromium after `--seconds` of media, with `--explain`. Needs chromium and chromium-driver (scripts/install.sh).

    .venv/bin/python scripts/web_screenshot.py docs/figures/web_view.png --seconds 15
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from streamrec.core.assets import EXAMPLE_CLIP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of media before the screenshot")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamrec",
            "run",
            str(EXAMPLE_CLIP),
            "--realtime",
            "--no-view",
            "--duration",
            str(args.seconds + 5),
            "--explain",
            "--web",
            f"127.0.0.1:{port}",
            "--wait-clients",
            "1",
        ]
    )
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        driver.get(f"http://127.0.0.1:{port}/")
        time.sleep(args.seconds)
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
        run.terminate()
        run.wait()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
