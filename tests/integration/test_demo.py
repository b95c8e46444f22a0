"""The demo that needs no token: compose.yaml + compose.demo.yaml, and the emulator's chat page
in a real browser (Debian's Chromium). Offline, compose.offline.yaml swaps in the images this run
built (it cannot build the standalone target); the demo's own settings are what is tested.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.integration.conftest import LOG_DIR, OFFLINE, ROOT
from tests.integration.harness import figure, wait_until
from tests.integration.test_dashboard import chromium

pytestmark = pytest.mark.integration

DEMO = ROOT / "compose.demo.yaml"


def compose(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    files = [x for f in ("compose.yaml", DEMO, OFFLINE / "compose.offline.yaml") for x in ("-f", str(f))]
    return subprocess.run(["docker", "compose", *files, *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def bot_says(driver, text: str) -> bool:
    return any(text in b.text for b in driver.find_elements(By.CSS_SELECTOR, ".msg.bot"))


def test_demo_in_a_browser(stack_image, emulator_image, log_archive):
    demo_token = yaml.safe_load(DEMO.read_text())["services"]["botstack"]["environment"]["TELEGRAM_BOT_TOKEN"]
    project = f"botstack-demo-{uuid.uuid4().hex[:8]}"
    env = {"COMPOSE_PROJECT_NAME": project, "BOTSTACK_TAG": stack_image.split(":", 1)[1],
           "BOTSTACK_TEST_EMULATOR_IMAGE": emulator_image, "BOTSTACK_TEST_TOKEN": demo_token,
           "BOTSTACK_API_PUBLISH": "127.0.0.1:", "BOTSTACK_WEB_PUBLISH": "127.0.0.1:",
           "BOTSTACK_DEMO_CHAT_PUBLISH": "127.0.0.1:", "BOTSTACK_TEST_WEB_PASSWORD": "demo-dashboard-password"}
    driver = None
    try:
        up = compose(env, "up", "--detach", "--wait", "--wait-timeout", "150")
        assert up.returncode == 0, up.stdout + up.stderr
        port = compose(env, "port", "telegram", "8081").stdout.strip().rsplit(":", 1)[1]
        driver = chromium(1000, 800)
        driver.get(f"http://127.0.0.1:{port}/_emulator/chat")
        box = driver.find_element(By.ID, "text")
        box.send_keys("/start", Keys.ENTER)
        wait_until(lambda: bot_says(driver, "Hello, Demo!"), 30, "the bot's greeting in the chat")
        box.send_keys("/menu", Keys.ENTER)
        wait_until(lambda: bot_says(driver, "Press the button:"), 30, "the menu")
        driver.find_element(By.XPATH, "//button[text()='Press me']").click()
        wait_until(lambda: bot_says(driver, "Pressed 1 time(s)."), 30, "the message edited by the button")
        assert not bot_says(driver, "Press the button:"), "the edit added a message instead of editing it"
        shot = LOG_DIR / "demo-chat.png"
        driver.save_screenshot(str(shot))
        figure(f"demo chat in Chromium: /start, /menu, a button press and its edit; screenshot {shot}")
    finally:
        if driver is not None:
            driver.quit()
        log_archive.add(project, compose(env, "logs", "--no-color").stdout)
        compose(env, "down", "--volumes", "--timeout", "30")
