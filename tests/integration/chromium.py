"""Debian's headless Chromium driven by chromedriver, as every browser test starts it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# No background traffic (this machine has no network but loopback), a fresh profile each time.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")


def start(*extra_flags: str) -> Any:
    """A new Chromium session with an empty profile; end it with stop()."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="hubsvc-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", *extra_flags):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(90)
    drv.hubsvc_profile = profile
    return drv


def stop(drv: Any) -> None:
    """Quit the session and remove its profile."""
    drv.quit()
    shutil.rmtree(drv.hubsvc_profile, ignore_errors=True)
