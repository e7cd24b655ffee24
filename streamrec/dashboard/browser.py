"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by
``deploy/browser.sh``) driven by selenium: the dashboard's browser test and its screenshot
command use this one setup."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")
# The machine's network is closed: without these Chromium keeps dialling Google's services.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def missing() -> str | None:
    """Why no browser can be started here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if _which(CHROMIUM) is None:
        return "no chromium binary (bash deploy/browser.sh installs Debian's chromium)"
    if _which(CHROMEDRIVER) is None:
        return "no chromedriver (bash deploy/browser.sh installs Debian's chromium-driver)"
    return None


def chromium(width: int = 1400, height: int = 2000) -> Any:
    """A headless Chromium WebDriver with a fresh profile; the caller quits it."""
    why = missing()
    if why is not None:
        raise RuntimeError(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _which(CHROMIUM) or ""
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='streamrec-chromium-')}")
    return webdriver.Chrome(service=Service(_which(CHROMEDRIVER) or ""), options=options)
