"""Screenshot of the monitoring page in headless Chromium (dev only: the demo's last step).

Uses Debian's `chromium` and `chromium-driver` through Selenium, exactly as tests/test_portal.py
does; Selenium is pointed at those executables, so it never tries to download a browser."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

WAIT = 120


def chromium(width: int = 1280, height: int = 1000) -> Any:
    """A headless Chromium session (raises RuntimeError saying what to install when missing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        raise RuntimeError("Chromium is missing: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def portal_screenshot(portal_url: str, path: Path, *, sync_first: bool = True) -> Path:
    """Open the page, press "Sync now" and "View error log" on the first integration, save a PNG."""
    from selenium.webdriver.support.ui import WebDriverWait

    path.parent.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    try:
        browser.get(portal_url)
        wait = WebDriverWait(browser, WAIT, poll_frequency=0.2)
        wait.until(lambda b: b.execute_script("return document.body.dataset.loaded"))
        cards = browser.find_elements("css selector", "article.integration")
        if cards and sync_first:
            cards[0].find_element("css selector", "button.sync").click()
            wait.until(lambda b: b.execute_script(
                "return document.querySelector('article.integration .progress')?.dataset.result"))
        if browser.find_elements("css selector", "article.integration"):
            browser.find_element("css selector", "article.integration button.show-errors").click()
            wait.until(lambda b: b.execute_script(
                "return document.querySelector('article.integration .errors')?.dataset.state === 'loaded'"))
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(4000, max(800, int(height) + 40)))
        browser.save_screenshot(str(path))
        return path
    finally:
        browser.quit()
