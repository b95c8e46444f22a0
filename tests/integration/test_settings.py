"""Production settings only: reload is refused, bad settings stop a program with one clear line."""

import json
import os
import re
import time

import pytest

from tests.integration.harness import all_answered, figure, http_get, identities, remember, wait_until

pytestmark = pytest.mark.integration

EFFECTIVE_COMMANDS = r'''
import json
from supervisor.options import ServerOptions
o = ServerOptions()
o.realize(["-c", "/app/supervisord.conf"])
print(json.dumps({p.name: p.command for g in o.process_group_configs for p in g.process_configs}))
'''
WATCHERS = re.compile(r"--reload|\breload\b|watchfiles|watchgod|watchdog|--watch|nodemon", re.I)


def test_no_reload_in_production(docker_client, stack_image, start_stack):
    out = docker_client.containers.run(stack_image, ["python", "-c", EFFECTIVE_COMMANDS], remove=True)
    commands = json.loads(out.decode().strip().splitlines()[-1])
    assert set(commands) == {"mongodb", "api", "web", "bot", "healthcheck"}
    for name, command in commands.items():
        assert not WATCHERS.search(command), f"{name}: {command}"
    missing = docker_client.containers.run(
        stack_image, ["python", "-c", "import importlib.util as u; print(u.find_spec('watchfiles') is None)"],
        remove=True,
    )
    assert missing.decode().strip() == "True", "a file watcher is installed in the image"

    # A program asked to reload in production refuses to start: exit 78, the variable named.
    container = docker_client.containers.run(
        stack_image, ["python", "-m", "services.api"], environment={"BOTSTACK_RELOAD": "true"}, detach=True
    )
    try:
        assert container.wait(timeout=60)["StatusCode"] == 78
        lines = container.logs().decode().strip().splitlines()
        assert len(lines) == 1 and "BOTSTACK_RELOAD" in lines[0] and "production" in lines[0], lines
    finally:
        container.remove(force=True)

    # The whole container started that way: every Python program refuses, supervisord says 78.
    stack = start_stack(BOTSTACK_RELOAD="true")
    for program in ("api", "web", "bot"):
        wait_until(lambda: f"exited: {program} (exit status 78" in stack.logs(), 60, f"{program} to exit 78")
        refusal = re.compile(rf"^{program}: configuration error: BOTSTACK_RELOAD: .*production.*$", re.M)
        assert refusal.search(stack.logs()), f"no whole refusal line from {program}"


def test_invalid_settings_stop_the_api_with_one_line(start_stack):
    stack = start_stack(MONGODB_URI="nonsense")
    wait_until(lambda: "exited: api (exit status 78" in stack.logs(), 60, "api to exit 78")
    lines = [l for l in stack.logs().splitlines() if l.startswith("api: ")]
    assert lines and all(l.startswith("api: configuration error: MONGODB_URI: ") for l in lines), lines
    assert "Traceback" not in stack.logs()


def test_the_app_target_without_a_database_setting_refuses_with_one_line(docker_client, app_image):
    """The app target has no mongod; left at the default MONGODB_URI it stops at once, saying what to set."""
    container = docker_client.containers.run(app_image, detach=True,
                                             environment={"TELEGRAM_BOT_TOKEN": "123456:" + "a" * 35})
    try:
        assert container.wait(timeout=60)["StatusCode"] == 78
        lines = container.logs().decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("botstack: configuration error: MONGODB_URI: "), lines
        assert "set MONGODB_URI" in lines[0], lines
    finally:
        container.remove(force=True)


def test_another_uid_in_group_0_does_the_work_and_loses_nothing_to_a_kill(start_stack, emulator):
    """Another user than the image's, in group 0, as OpenShift assigns (and `docker run --user
    12345:0` gives): the image's folders are group 0's too, so every program runs as that user
    and does its work as the image's user would: users write while the bot is killed, and every
    update is answered and stored once; a backup is made and verified; supervisord's socket is
    this user's, 0700."""
    stack = start_stack(user="12345:0")
    stack.wait_healthy()
    bot = stack.bot_id
    ids = [remember(emulator, bot, n) for n in range(10)]
    killed = stack.bot_pid()
    stack.signal(killed, "KILL")
    ids += [remember(emulator, bot, n) for n in range(10, 20)]
    counts = all_answered(emulator, bot, ids, 60)
    notes = stack.db("[len(d.get('notes', [])) for d in db.user_contexts.find({'_id': {'$gte': 7500000}})]")
    programs = stack.programs()
    owners = {name: stack.exec(["stat", "-c", "%u", f"/proc/{p['pid']}"])[1].strip() for name, p in programs.items()}
    code, backup = stack.exec(["botstack", "backup"])
    figure(f"uid 12345, group 0: bot killed among 20 /remember: all answered, "
           f"{sum(n - 1 for n in counts.values())} twice; notes {len(notes)} users")
    assert programs["bot"]["pid"] != killed and set(owners.values()) == {"12345"}, owners
    assert len(notes) == 20 and set(notes) == {1}, notes
    assert code == 0 and "verified" in backup, backup
    assert stack.exec(["stat", "-c", "%u %a", "/run/botstack/supervisor.sock"])[1].split() == ["12345", "700"]


def test_a_data_folder_it_cannot_write_stops_only_mongodb_with_one_line_and_loses_nothing(start_stack, emulator,
                                                                                         tmp_path):
    """A host folder mounted on /data/db that the container's user cannot write (root's, as
    `mkdir` on the host makes it), then one fixed without -R (a file in it still root's): each
    time mongodb alone refuses, with one line naming what to fix; the api, the dashboard and the
    bot run on, saying the database is down, and users write meanwhile; the verdict says why
    mongodb is FATAL. Once the folder is fixed on the host, mongod starts by itself (the
    sidecar's next try) and every update is answered and stored once. Before, mongod failed over
    and over with errors about files (the stand-in: "unable to open database file: out of
    memory")."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # root's: the test runs as root
    (data / "WiredTiger.lock").write_bytes(b"")  # root's too, 0644: left by a mongod run as root
    stack = start_stack(volumes={str(data): "/data/db"}, BOTSTACK_HEAL_BACKOFF_BASE_S="2")

    def refusal(what: str) -> str:
        lines = [line for line in stack.logs().splitlines() if line.startswith("mongodb: configuration error: ")]
        return next((line for line in lines if what in line), "")

    line = wait_until(lambda: refusal("/data/db: not writable by this user"), 60, "mongodb's refusal")
    assert "it is uid 0, gid 0, mode 755" in line and "chown -R 10001:0" in line, line
    others = ("api", "web", "bot")
    running = wait_until(lambda: (p := stack.programs()) and all(p[n]["statename"] == "RUNNING" for n in others) and p,
                         60, "the api, the dashboard and the bot running")
    # RUNNING is supervisord's startsecs (3 s) passed, not uvicorn listening: a loaded CI's API took longer
    wait_until(lambda: http_get(f"{stack.api}/health").status_code == 200 == http_get(f"{stack.web}/health").status_code,
               30, "the api and the dashboard answering /health")
    assert http_get(f"{stack.api}/ready").status_code == 503
    ids = [remember(emulator, stack.bot_id, n) for n in range(5)]
    # supervisord gives up ("Exited too quickly"); the verdict says why, as the dashboard and alerts do
    wait_until(lambda: "mongodb: FATAL (crash loop): configuration error: /data/db: not writable by this user"
               in stack.health()[1], 60, "the verdict naming the folder")

    os.chown(data, 10001, 0)
    data.chmod(0o2770)
    line = wait_until(lambda: refusal("/data/db/WiredTiger.lock is not writable"), 90, "the file still root's named")
    assert "it is uid 0, gid 0, mode 644" in line, line
    ids += [remember(emulator, stack.bot_id, n) for n in range(5, 10)]

    fixed = time.monotonic()
    for path in (data, *data.rglob("*")):
        os.chown(path, 10001, 0)
    wait_until(stack.ready, 120, "mongod started once the folder is fixed")
    ready_s = time.monotonic() - fixed
    counts = all_answered(emulator, stack.bot_id, ids, 60)
    notes = stack.db("[len(d.get('notes', [])) for d in db.user_contexts.find({'_id': {'$gte': 7500000}})]")
    after = stack.programs()
    figure(f"data folder root's, then a file in it root's: mongodb refused with one line each time, api, web and bot "
           f"ran on; fixed on the host: ready {ready_s:.1f} s later, 10 updates written meanwhile all answered, "
           f"{sum(n - 1 for n in counts.values())} twice")
    assert set(counts.values()) == {1}, counts
    assert len(notes) == 10 and set(notes) == {1}, notes
    assert identities(after, others) == identities(running, others), "restarted for the database's folder"
    assert "Traceback" not in stack.logs()


def test_started_as_root_it_gives_the_volume_to_its_user_and_runs_nothing_as_root(start_stack, emulator, tmp_path):
    """Railway mounts a volume as root's and asks non-root images to run as root
    (RAILWAY_RUN_UID=0); `docker run --user 0` does the same. A root-owned host folder, with a
    file a mongod run as root left, mounted on /data/db, the container started as root: the
    entry point gives the folder and the file to the image's user, becomes that user, and every
    program, supervisord included, runs as it; the bot killed while users write comes back as
    that user, and every update is answered and stored once."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # root's: the test runs as root
    (data / "WiredTiger.lock").write_bytes(b"")
    stack = start_stack(user="0:0", volumes={str(data): "/data/db"})
    stack.wait_healthy()
    ids = [remember(emulator, stack.bot_id, n) for n in range(5)]
    killed = stack.bot_pid()
    stack.signal(killed, "KILL")
    ids += [remember(emulator, stack.bot_id, n) for n in range(5, 10)]
    counts = all_answered(emulator, stack.bot_id, ids, 60)
    notes = stack.db("[len(d.get('notes', [])) for d in db.user_contexts.find({'_id': {'$gte': 7500000}})]")
    pids = {name: p["pid"] for name, p in stack.programs().items()} | {"supervisord": 1}
    owners = {name: stack.exec(["stat", "-c", "%u", f"/proc/{pid}"])[1].strip() for name, pid in pids.items()}
    figure(f"started as root with a root-owned data folder: every program as uid {set(owners.values())}; the bot "
           f"killed among 10 /remember: all answered, {sum(n - 1 for n in counts.values())} twice")
    assert pids["bot"] != killed and set(owners.values()) == {"10001"}, owners
    assert {os.stat(path).st_uid for path in (data, data / "WiredTiger.lock")} == {10001}
    assert len(notes) == 10 and set(notes) == {1}, notes
    assert stack.exec(["stat", "-c", "%u %a", "/run/botstack/supervisor.sock"])[1].split() == ["10001", "700"]


def test_the_run_dir_is_made_when_hidden_or_refused_with_one_line(docker_client, stack_image, tmp_path):
    """A read-only root filesystem with a fresh, empty /run hides the image's /run/botstack.
    A world-writable one (Kubernetes' emptyDir: a host folder, mode 0777): botstack makes its
    folder there and starts. A root-owned one, or a user other than the image's: one line saying
    what to do, exit 78 (not supervisord's "Cannot open an HTTP server"). (Any uid in group 0
    runs: test_another_uid_in_group_0_does_the_work_and_loses_nothing_to_a_kill.)"""
    env = {"TELEGRAM_BOT_TOKEN": "123456:" + "a" * 35}
    empty_dir = tmp_path / "run"
    empty_dir.mkdir()
    empty_dir.chmod(0o1777)
    container = docker_client.containers.run(stack_image, detach=True, read_only=True, environment=env,
                                             volumes={str(empty_dir): {"bind": "/run", "mode": "rw"}},
                                             tmpfs={"/tmp": "", "/data/db": "uid=10001,gid=10001"})  # /ready: a database that writes
    try:
        def answers() -> bool:
            container.reload()
            assert container.status == "running", container.logs().decode()[-2000:]
            code, _ = container.exec_run(["python", "-m", "services.common.probe", "http://127.0.0.1:8000/ready"])
            return code == 0
        wait_until(answers, 90, "the API ready on a read-only root filesystem")
        assert container.exec_run(["stat", "-c", "%a %U", "/run/botstack"]).output.decode().split() == \
            ["750", "botstack"]
    finally:
        container.remove(force=True)

    roots = tmp_path / "run-of-root"
    roots.mkdir(mode=0o755)  # root's, as the test runs as root: the botstack user may not write in it
    container = docker_client.containers.run(stack_image, detach=True, read_only=True, environment=env,
                                             volumes={str(roots): {"bind": "/run", "mode": "rw"}},
                                             tmpfs={"/tmp": ""})
    try:
        assert container.wait(timeout=60)["StatusCode"] == 78
        lines = container.logs().decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("botstack: configuration error: /run/botstack: "), lines
        assert "mount a tmpfs" in lines[0] and "uid=10001" in lines[0], lines
    finally:
        container.remove(force=True)

    # Any other user and group (`user:` in compose, a platform's own uid): one line saying what to do.
    container = docker_client.containers.run(stack_image, detach=True, user="12345:12345", environment=env)
    try:
        assert container.wait(timeout=60)["StatusCode"] == 78
        lines = container.logs().decode().strip().splitlines()
        assert len(lines) == 1 and "/run/botstack: not writable by this user (uid 12345)" in lines[0], lines
    finally:
        container.remove(force=True)
