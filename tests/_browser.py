"""Open an HTML file in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
selenium) and report what a reader would see: the images as decoded, the tables, the console errors, the
visible text, and optionally a full-page screenshot.

Without the browser the test is skipped with the reason, unless REPANALYSIS_REQUIRE_BROWSER=1 (CI: .ci/run
installs the browser and sets it), where it fails instead.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

WIDTH = 1280            # the window width for the page and its screenshot (a laptop screen)
REQUIRE = "REPANALYSIS_REQUIRE_BROWSER"

_IMAGES_JS = """
return Array.from(document.images).map(img => ({
    src_prefix: img.getAttribute('src').slice(0, 32), naturalWidth: img.naturalWidth,
    naturalHeight: img.naturalHeight, complete: img.complete}));
"""
_TABLES_JS = """
return Array.from(document.querySelectorAll('table')).map(t => {
    const body = Array.from(t.tBodies).flatMap(b => Array.from(b.rows));
    return {caption: t.caption ? t.caption.innerText.trim() : null, rows: body.length,
            first_column: body.map(r => r.cells.length ? r.cells[0].innerText.trim() : '')};
});
"""


def _unavailable(reason: str):
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason}; {REQUIRE}=1 requires the browser test to run (install Debian's chromium and "
                    "chromium-driver: apt-get install -y chromium chromium-driver, as .ci/run does)")
    pytest.skip(f"{reason} (apt-get install chromium chromium-driver to run the browser test)")


def _browser() -> tuple[str, str]:
    """(chromium binary, chromedriver binary), or skip / fail saying what is missing."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    missing = [name for name, found in (("chromium", chromium), ("chromedriver", driver)) if not found]
    if missing:
        _unavailable(f"no {' or '.join(missing)} on PATH")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed (pip install -c constraints.txt -e '.[dev]')")
    return chromium, driver


def inspect_page(html_path, screenshot=None) -> dict:
    """Load ``html_path`` in headless Chromium and return what it shows:

    - ``images``: one dict per <img>: ``src_prefix`` (the first 32 characters of its src), ``naturalWidth``,
      ``naturalHeight`` (0 when it did not decode) and ``complete``;
    - ``tables``: one dict per <table>: ``caption`` (text or None), ``rows`` (number of body rows) and
      ``first_column`` (the text of each body row's first cell);
    - ``console_errors``: the messages of the browser log at level SEVERE (failed loads, script errors);
    - ``text``: the visible text of the page; ``title``: the document title;
    - ``screenshot``: the path of a full-page PNG (the window made as tall as the document), or None.
    """
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={WIDTH},1000",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        browser.set_page_load_timeout(60)
        browser.get(Path(html_path).resolve().as_uri())
        browser.execute_async_script(    # every image decoded (or failed) before anything is measured
            "const done = arguments[arguments.length - 1];"
            "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null))).then(done);")
        page = {
            "images": browser.execute_script(_IMAGES_JS),
            "tables": browser.execute_script(_TABLES_JS),
            "text": browser.find_element(By.TAG_NAME, "body").text,
            "title": browser.title,
            "screenshot": None,
        }
        if screenshot is not None:
            height = browser.execute_script(
                "return Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight))")
            chrome = browser.execute_script("return window.outerHeight - window.innerHeight")
            browser.set_window_size(WIDTH, int(height) + int(chrome))
            screenshot = Path(screenshot)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            if not browser.save_screenshot(str(screenshot)):
                raise RuntimeError(f"Chromium could not save the screenshot {screenshot}")
            page["screenshot"] = screenshot
        page["console_errors"] = [entry["message"] for entry in browser.get_log("browser")
                                  if entry.get("level") == "SEVERE"]
    finally:
        browser.quit()
    return page
