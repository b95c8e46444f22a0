"""The development loop (compose.dev.yaml): mounted code, and api, web and the bot reload on a
change; production cannot reload at all.

Offline the Dockerfile's dev target cannot be built (it starts from the standalone target, which
downloads MongoDB), so the test adds to the offline test image exactly what the dev target adds:
watchfiles. The settings and the code under test are the shipped ones.
"""

from __future__ import annotations

import io
import time

import pytest

from tests.integration.harness import figure, http_get, wait_until

pytestmark = pytest.mark.integration

HELLO = '''from telegram.ext import CommandHandler


async def hello(update, context):
    await update.effective_message.reply_text("{text}", do_quote=True)


def install(application):
    application.add_handler(CommandHandler("hello", hello))
'''


@pytest.fixture(scope="module")
def dev_image(docker_client, stack_image) -> str:
    tag = f"{stack_image}-dev"
    dockerfile = (f"FROM {stack_image}\nUSER root\n"
                  "RUN pip install --no-cache-dir --disable-pip-version-check watchfiles==1.3.0\nUSER botstack\n")
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


def started_at(url: str) -> str:
    return http_get(f"{url}/version").json()["started_at"]


def test_dev_mode_reloads_the_bot(dev_image, start_stack, emulator, tmp_path):
    yours = tmp_path / "yours"
    yours.mkdir()
    (yours / "__init__.py").write_text("")
    (yours / "hello.py").write_text(HELLO.format(text="hello, first version"))
    for p in (yours, yours / "__init__.py", yours / "hello.py"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    stack = start_stack(image=dev_image, volumes={str(yours): "/app/yours"}, BOTSTACK_ENV="development",
                        BOTSTACK_RELOAD="true")
    stack.wait_healthy()
    assert emulator.ask(stack.bot_id, "/hello", timeout_s=30) == "hello, first version"
    api_started, web_started = started_at(stack.api), started_at(stack.web)
    time.sleep(1.1)  # started_at has a one-second resolution

    (yours / "hello.py").write_text(HELLO.format(text="hello, second version"))
    t0 = time.monotonic()

    def new_text():
        return emulator.ask(stack.bot_id, "/hello", timeout_s=3) == "hello, second version"

    wait_until(new_text, 10, "the bot answering with the changed handler", interval_s=0.5)
    figure(f"dev mode: the bot answered with the changed handler {time.monotonic() - t0:.1f} s after the change")
    wait_until(lambda: started_at(stack.api) != api_started and started_at(stack.web) != web_started, 20,
               "api and web reloaded")


def test_production_has_no_reloader(docker_client, stack_image):
    container = docker_client.containers.run(
        stack_image, ["python", "-m", "services.api"], detach=True,
        environment={"BOTSTACK_ENV": "development", "BOTSTACK_RELOAD": "true", "BOTSTACK_WEB_PASSWORD": "x" * 12})
    try:
        assert container.wait(timeout=60)["StatusCode"] == 78
        line = container.logs().decode().strip().splitlines()[-1]
        assert line.startswith("api: configuration error: BOTSTACK_RELOAD: needs watchfiles"), line
    finally:
        container.remove(force=True)
