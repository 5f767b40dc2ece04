"""The web console in a real headless Chromium (Debian's chromium and chromedriver, driven by
Selenium): log in, find a flagged record by filter, open it, acknowledge it, and see the
acknowledgement under the logged-in user in `audit export`; a viewer gets no acknowledge form.
Screenshots of the record page and of the dashboard are kept in out/screenshots/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.audit.users import Role
from tests.node.conftest import export, needs_dcmtk, sro_files, storescu
from tests.web.conftest import PASSWORD

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "out" / "screenshots"

needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,1400", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _login(driver: Any, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/records")  # no session: sent to the login page
    assert "/login" in driver.current_url
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, 10).until(lambda d: "/login" not in d.current_url)


@needs_dcmtk
@needs_chromium
def test_log_in_filter_open_acknowledge_in_chromium(web_factory: Any, sro_dir: Path,
                                                     browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    w = web_factory()
    w.user("phys", Role.PHYSICIST)
    w.user("view", Role.VIEWER)
    assert storescu(w.dicom_port, sro_files(sro_dir)).returncode == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    _login(browser, w.url, "phys")
    assert browser.current_url.endswith("/records")
    Select(browser.find_element(By.ID, "f-flagged")).select_by_value("yes")
    browser.find_element(By.ID, "f-unack").click()
    browser.find_element(By.ID, "f-apply").click()
    WebDriverWait(browser, 10).until(lambda d: "flagged=yes" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#records tr[data-decision]")
    assert rows and all(r.get_attribute("data-decision") in
                        ("ambiguous", "out_of_distribution", "invalid") for r in rows)
    rows[0].find_element(By.CLASS_NAME, "record-link").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "uid"))
    uid = browser.find_element(By.ID, "uid").text
    assert browser.find_element(By.ID, "decision").text in (
        "ambiguous", "out_of_distribution", "invalid")
    browser.save_screenshot(str(SCREENSHOTS / "record.png"))
    browser.find_element(By.ID, "ack-note").send_keys("reviewed in the browser")
    browser.find_element(By.ID, "ack-submit").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_elements(By.CLASS_NAME, "ack-by"))  # the page after the redirect
    assert [e.text for e in browser.find_elements(By.CLASS_NAME, "ack-by")] == ["phys"]
    browser.get(w.url + "/")
    assert browser.find_element(By.ID, "decisions").is_displayed()
    browser.save_screenshot(str(SCREENSHOTS / "dashboard.png"))

    acks = export(w.data_dir)[uid]["acknowledgements"]
    assert [(a["by"], a["note"]) for a in acks] == [("phys", "reviewed in the browser")]

    # log out; a viewer sees the record but no acknowledge form
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    WebDriverWait(browser, 10).until(lambda d: "/login" in d.current_url)
    _login(browser, w.url, "view")
    browser.get(f"{w.url}/records?decision=")
    browser.find_element(By.CLASS_NAME, "record-link").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "ack-refused"))
    assert browser.find_element(By.ID, "ack-refused").is_displayed()
    assert not browser.find_elements(By.ID, "ack-form")
    assert (SCREENSHOTS / "record.png").stat().st_size > 10_000
