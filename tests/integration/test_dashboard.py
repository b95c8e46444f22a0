"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver (scripts/setup-host.sh installs both).

Screenshots land in tests/integration/.logs/ (desktop and phone width) for the issue's note.
"""

from __future__ import annotations

import re
import secrets
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.integration.conftest import LOG_DIR
from tests.integration.harness import WEB_PASSWORD, new_token, wait_until

pytestmark = pytest.mark.integration


def chromium(width: int, height: int) -> webdriver.Chrome:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "chromium and chromium-driver are missing: run scripts/setup-host.sh"
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={max(width, 500)},{height}"):
        options.add_argument(arg)
    if width < 500:  # a window cannot be that narrow: emulate the phone's screen instead
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height,
                                                                               "pixelRatio": 2}})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture
def browser():
    drivers = []

    def open_browser(width: int = 1280, height: int = 900) -> webdriver.Chrome:
        drivers.append(chromium(width, height))
        return drivers[-1]

    yield open_browser
    for driver in drivers:
        driver.quit()


def text(driver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def log_in(driver, base: str) -> None:
    driver.get(f"{base}/")
    assert "/login" in driver.current_url, "the dashboard let an anonymous visitor in"
    driver.find_element(By.ID, "password").send_keys(WEB_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(lambda: driver.find_elements(By.ID, "programs"), 15, "the overview after logging in")


def confirm(driver, base: str, link_text: str) -> str:
    driver.find_element(By.PARTIAL_LINK_TEXT, link_text).click()
    driver.find_element(By.ID, "confirm").click()
    return wait_until(lambda: driver.find_elements(By.ID, "outcome") and text(driver, "#outcome"), 60,
                      f"the outcome of {link_text}")


def test_dashboard_in_a_browser(start_stack, emulator, browser):
    token = new_token()
    admin_token = secrets.token_hex(16)
    stack = start_stack(TELEGRAM_BOT_TOKEN=token, BOTSTACK_EXTENSIONS="botstack_testkit",
                        BOTSTACK_INBOX_MAX_ATTEMPTS="1", BOTSTACK_ADMIN_TOKEN=admin_token)
    stack.wait_healthy()
    bot = token.split(":")[0]
    failing = emulator.inject(bot, "/fail", user={"id": 8001, "first_name": "Ada"})
    wait_until(lambda: stack.db(f"(db.inbox.find_one({{'update_id': {failing}}}) or {{}}).get('state')") == "failed",
               60, "the failing update parked")

    driver = browser()
    base = stack.web
    log_in(driver, base)
    wait_until(lambda: text(driver, "#health") == "healthy", 60, "a healthy overview")
    rows = driver.find_elements(By.CSS_SELECTOR, "#programs tbody tr")
    assert {r.get_attribute("data-program") for r in rows} >= {"mongodb", "api", "web", "bot", "healthcheck"}
    driver.save_screenshot(str(LOG_DIR / "dashboard-overview-desktop.png"))

    # Live: the bot dies and comes back; the row follows without a page load.
    driver.execute_script("window.__sameDocument = true;")
    pid_cell = 'tr[data-program="bot"] .pid'
    old_pid = text(driver, pid_cell)
    stack.signal(int(old_pid), "KILL")
    wait_until(lambda: text(driver, pid_cell) not in (old_pid, "—"), 30, "the new bot PID on the page")
    wait_until(lambda: text(driver, 'tr[data-program="bot"] .restarts').startswith("1 /"), 30, "the crash counted")
    assert driver.execute_script("return window.__sameDocument === true;"), "the page was reloaded"

    driver.get(f"{base}/timeline")
    assert driver.find_elements(By.CSS_SELECTOR, "#timeline-chart svg .event")
    events = text(driver, "#events")
    assert re.search(r"bot\s+crash", events), events
    driver.save_screenshot(str(LOG_DIR / "dashboard-timeline-desktop.png"))

    driver.get(f"{base}/bot")
    assert "HandlerBug" in text(driver, "#failed")
    assert "1 failed" in text(driver, "#inbox-counts")
    outcome = confirm(driver, base, "Retry")
    assert outcome == "1 failed update(s) will be handled again", outcome

    driver.get(f"{base}/operations")
    outcome = confirm(driver, base, "Take a backup")
    assert outcome.startswith("backup botstack-") and "verified" in outcome, outcome
    driver.get(f"{base}/operations")
    assert "botstack-" in text(driver, "#backups")
    audit = text(driver, "#audit")
    assert "backup" in audit and "retry" in audit and "web:admin" in audit, audit

    phone = browser(390, 844)
    log_in(phone, base)
    width, viewport = phone.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
    phone.save_screenshot(str(LOG_DIR / "dashboard-overview-phone.png"))
    phone.get(f"{base}/timeline")
    phone.save_screenshot(str(LOG_DIR / "dashboard-timeline-phone.png"))
    assert viewport == 390 and width <= viewport, f"the overview is {width} px wide on a {viewport} px phone"

    # No secret in any page or JSON endpoint, logged in.
    with stack.dashboard() as web:
        for path in ("/", "/overview.json", "/timeline?range=7d", "/bot", "/operations", "/confirm?action=backup",
                     "/login", "/version", "/health"):
            body = web.get(path).text
            for secret in (token, token.split(":")[1], admin_token, WEB_PASSWORD):
                assert secret not in body, f"a secret on {path}"

    driver.find_element(By.CSS_SELECTOR, "header form button").click()
    wait_until(lambda: "/login" in driver.current_url, 10, "the login page after logging out")
    driver.get(f"{base}/bot")
    assert "/login" in driver.current_url
