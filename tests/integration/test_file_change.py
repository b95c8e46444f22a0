"""Production never reloads: files changing under a running stack restart nothing."""

import re
import time

import pytest

from tests.integration.harness import PROGRAMS, http_get

pytestmark = pytest.mark.integration

OBSERVE_S = 15

# Runs as root inside the container: edits, creates and deletes .py, .html and .conf files in
# the code directory, then rewrites every file the way `git pull` does (new file, rename).
CHURN = r'''
import os, pathlib
root = pathlib.Path("/app")
changes = 0
scratch = root / "services" / "churn"
scratch.mkdir(exist_ok=True)
for i in range(60):
    for ext, body in ((".py", f"X = {i}\n"), (".html", f"<p>{i}</p>\n"), (".conf", f"[program:ghost{i}]\ncommand=false\n")):
        p = scratch / f"f{i}{ext}"
        p.write_text(body); changes += 1                      # create
        p.write_text(body + "# edited\n"); changes += 1       # edit
        if i % 2:
            p.unlink(); changes += 1                          # delete
for p in [*root.rglob("*.py"), *root.rglob("*.html"), *root.rglob("*.conf")]:
    if "churn" in p.parts or "__pycache__" in p.parts:
        continue
    tmp = p.with_name(p.name + ".git-tmp")
    tmp.write_bytes(p.read_bytes() + b"\n")
    os.replace(tmp, p); changes += 1                          # git pull: rewrite + rename
print(changes)
'''


def _identity(programs: dict) -> dict:
    return {n: (programs[n]["pid"], programs[n]["start"], programs[n]["statename"]) for n in PROGRAMS}


def test_file_change_restarts_nothing(start_stack, emulator):
    stack = start_stack()
    baseline = _identity(stack.wait_healthy())
    api_started = http_get(f"{stack.api}/version").json()["started_at"]
    web_started = http_get(f"{stack.web}/version").json()["started_at"]
    log_mark = len(stack.logs())

    code, out = stack.exec(["python", "-c", CHURN], user="root")
    assert code == 0, out
    assert int(out.strip()) >= 200

    # Watch for the whole window, not just at its end: any restart in between would show.
    end = time.monotonic() + OBSERVE_S
    while time.monotonic() < end:
        assert _identity(stack.programs()) == baseline
        time.sleep(1)

    after = stack.logs()[log_mark:]
    assert not re.search(r"(exited|spawned): '?\w+", after), after
    assert http_get(f"{stack.api}/version").json()["started_at"] == api_started
    assert http_get(f"{stack.web}/version").json()["started_at"] == web_started
    assert "git_sha" in emulator.ask(stack.bot_id, "/version")
