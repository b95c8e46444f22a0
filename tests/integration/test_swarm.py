"""Scale-out on Docker Swarm: N replicas of the `app` target against one external MongoDB.

The stack is deployed from the shipped deploy/swarm.yaml with `docker stack deploy`, on a
single-node swarm of the test machine's engine. Two changes, made here and nowhere else, and
only because this kernel has no IPVS (Swarm's routing mesh and virtual IPs need it): the ingress
ports are removed and the service uses DNS round robin, so the API is reached from a container
on the stack's network; and the healthcheck runs more often, to keep CI short. The database
and the Bot API emulator are plain containers on an attachable overlay network.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import docker
import pytest
import yaml

from services.common.collections import INBOX
from tests.integration.conftest import ROOT, LogArchive
from tests.integration.harness import Emulator, Injector, all_answered, figure, http_get, new_token, wait_until

pytestmark = pytest.mark.integration

REPLICAS = 3
LEASE_TTL_S = 15.0
STACK_FILE = ROOT / "deploy" / "swarm.yaml"


def run(*args: str, env: dict | None = None, timeout: float = 180) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode:
        raise AssertionError(f"{' '.join(args[:4])} …: {result.stderr.strip()[-800:]}")
    return result.stdout


class Swarm:
    """A botstack service on Swarm, its external database and its Telegram (the emulator)."""

    def __init__(self, client: docker.DockerClient, image: str, db_image: str, emulator_image: str,
                 workdir: Path) -> None:
        self.client = client
        self.name = f"bs{uuid.uuid4().hex[:6]}"
        self.token = new_token()
        self.bot_id = self.token.split(":")[0]
        self.image = image
        self.password = f"swarm-dashboard-{uuid.uuid4().hex}"
        self.uri = f"mongodb://{self.name}-db:27017/?directConnection=true"
        # The settings the shipped stack file takes as Swarm secrets, named <prefix>_<name>.
        given = {"telegram_bot_token": self.token, "web_password": self.password, "mongodb_uri": self.uri}
        self.secrets = [client.secrets.create(name=f"{self.name}_{name}", data=value) for name, value in given.items()]
        self.network = client.networks.create(f"{self.name}-net", driver="overlay", attachable=True)
        self.db = client.containers.run(
            db_image, ["mongod", "--bind_ip", "0.0.0.0", "--port", "27017", "--dbpath", "/data/db"],
            name=f"{self.name}-db", network=self.network.name, detach=True)
        self.telegram = client.containers.run(
            emulator_image, ["python", "-m", "services.emulator", "--host", "0.0.0.0", "--port", "8081",
                             "--plain-http-webhooks"],
            name=f"{self.name}-telegram", network=self.network.name, detach=True,
            ports={"8081/tcp": ("127.0.0.1", None)})
        self.telegram.reload()
        port = self.telegram.attrs["NetworkSettings"]["Ports"]["8081/tcp"][0]["HostPort"]
        self.emulator = Emulator(None, f"http://127.0.0.1:{port}")
        wait_until(lambda: http_get(f"{self.emulator.url}/_emulator/health").status_code == 200, 30,
                   "the emulator")
        self.stack_file = workdir / f"{self.name}.yaml"

    def _adapted_stack_file(self, webhook_url: str | None, monitor: str) -> dict:
        """The shipped file, with the two changes the module docstring names."""
        spec = yaml.safe_load(STACK_FILE.read_text())
        service = spec["services"]["botstack"]
        del service["ports"]
        service["deploy"]["endpoint_mode"] = "dnsrr"
        service["networks"] = [self.network.name]
        service["healthcheck"] = {"interval": "5s", "timeout": "5s", "retries": 3, "start_period": "30s",
                                  "start_interval": "1s"}
        # 150 s: longer than the test healthcheck needs to call a crash-looping task unhealthy: 30 s
        # + 3 x 5 s = 45 s at the least, but each restart's STARTING moment passes a check and resets
        # Docker's count, and under two test workers it took more than 70 s. A task that fails within
        # it, a replica killed too, makes Swarm roll the whole update back.
        service["deploy"]["update_config"]["monitor"] = monitor
        if webhook_url:  # one of the settings the shipped file says to add as needed
            service["environment"]["TELEGRAM_WEBHOOK_URL"] = webhook_url
        spec["networks"] = {self.network.name: {"external": True}}
        return spec

    def deploy(self, image: str, webhook_url: str | None = None, monitor: str = "150s") -> None:
        self.stack_file.write_text(yaml.safe_dump(self._adapted_stack_file(webhook_url, monitor)))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "BOTSTACK_IMAGE": image, "BOTSTACK_REPLICAS": str(REPLICAS),
               "BOTSTACK_SECRETS": self.name, "TELEGRAM_API_BASE_URL": f"http://{self.name}-telegram:8081/bot",
               "BOTSTACK_LEASE_TTL_S": str(LEASE_TTL_S)}
        run("docker", "stack", "deploy", "--detach=true", "--resolve-image", "never", "-c", str(self.stack_file),
            self.name, env=env)

    @property
    def service(self):
        return self.client.services.get(f"{self.name}_botstack")

    def service_image(self) -> str:
        return self.service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]

    def containers(self) -> list:
        """The service's running containers (one per replica)."""
        return self.client.containers.list(filters={"label": f"com.docker.swarm.service.name={self.name}_botstack",
                                                    "status": "running"})

    def healthy_replicas(self, image: str | None = None) -> list:
        found = []
        for c in self.containers():
            c.reload()
            if c.attrs["State"].get("Health", {}).get("Status") == "healthy" and (
                    image is None or c.attrs["Config"]["Image"].split("@")[0] == image):
                found.append(c)
        return found

    def bot_status(self, container) -> dict:
        result = container.exec_run(["cat", "/run/botstack/bot.json"])
        return json.loads(result.output) if result.exit_code == 0 else {}

    def active(self) -> list:
        return [c for c in self.containers() if self.bot_status(c).get("role") == "active"]

    def api_versions(self, requests: int = 30) -> list[dict]:
        """GET /version, asked `requests` times from a container on the stack's network; each
        request resolves the service's name afresh (DNS round robin)."""
        script = ("import json, urllib.request\n"
                  f"for _ in range({requests}):\n"
                  "    with urllib.request.urlopen('http://botstack:8000/version', timeout=5) as r:\n"
                  "        print(json.dumps(json.load(r)))\n")
        result = self.telegram.exec_run(["python", "-c", script])
        assert result.exit_code == 0, result.output.decode(errors="replace")
        return [json.loads(line) for line in result.output.decode().splitlines()]

    def api_instances(self, requests: int = 30) -> list[str]:
        """Which replica answered each of `requests` GET /version."""
        return [v["instance"] for v in self.api_versions(requests)]

    def handled_by(self, update_ids: list[int]) -> dict[str, int]:
        """How many of these updates each replica handled, by the shared inbox's claims, read
        from a replica (the database is reached only on the stack's network)."""
        script = ("import collections, json, sys\n"
                  "from pymongo import MongoClient\n"
                  "from services.common.settings import load_settings\n"
                  "ids, settings = json.loads(sys.argv[1]), load_settings()\n"
                  "with MongoClient(settings.mongodb_uri) as c:\n"
                  f"    inbox = c[settings.mongodb_db][{INBOX!r}]\n"
                  "    docs = inbox.find({'update_id': {'$in': ids}}, {'claimed_by': 1})\n"
                  "    print(json.dumps(collections.Counter(d.get('claimed_by') for d in docs)))\n")
        result = self.containers()[0].exec_run(["python", "-c", script, json.dumps(update_ids)])
        assert result.exit_code == 0, result.output.decode(errors="replace")
        return json.loads(result.output)

    def logs(self) -> str:
        return "\n".join(c.logs().decode(errors="replace") for c in self.containers())

    def close(self, archive: LogArchive) -> None:
        # Every task's container, exited ones too, read one by one: `docker service logs` once hung
        # for its whole 60 s timeout on a task whose container Swarm had just removed, and three
        # other tests' calls to the engine timed out meanwhile.
        try:
            tasks = self.client.containers.list(
                all=True, filters={"label": f"com.docker.swarm.service.name={self.name}_botstack"})
            archive.add(f"{self.name}-service", "\n".join(f"== {c.name}\n{c.logs().decode(errors='replace')}"
                                                          for c in tasks))
        except Exception as exc:  # noqa: BLE001 - archiving must not hide the test's own failure
            archive.add(f"{self.name}-service", f"<no logs: {exc}>")
        subprocess.run(["docker", "stack", "rm", self.name], capture_output=True, timeout=60)
        wait_until(lambda: not self.client.containers.list(
            all=True, filters={"label": f"com.docker.stack.namespace={self.name}"}), 120, "the stack removed")
        for c in (self.db, self.telegram):
            c.remove(force=True)
        for secret in self.secrets:  # in use until the stack's tasks are gone
            try:
                secret.remove()
            except docker.errors.APIError as exc:  # a fresh CI machine does not mind; say it
                archive.add(f"{self.name}-secrets", f"not removed: {exc}")
        wait_until(lambda: self._remove_network(), 60, "the overlay network removed")

    def _remove_network(self) -> bool:
        try:
            self.network.remove()
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError:  # endpoints are still being detached
            return False
        return True


@pytest.fixture(scope="module")
def swarm_engine(docker_client) -> Iterator[None]:
    """A single-node swarm on the test engine, which stays one after the run: `docker swarm
    leave --force` breaks the embedded DNS of every user-defined network on the engine
    (measured here: containers of other tests, running in the other pytest-xdist worker, could
    no longer resolve their emulator's name), and joining does no harm to them."""
    if docker_client.info()["Swarm"]["LocalNodeState"] != "active":
        try:
            run("docker", "swarm", "init", timeout=60)
        except AssertionError:  # several addresses: name one
            run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1", timeout=60)
    yield


@pytest.fixture(scope="module")
def swarm(swarm_engine, docker_client, app_image, stack_image, emulator_image, log_archive,
          tmp_path_factory) -> Iterator[Swarm]:
    """One deployment for the module; each test leaves it with every replica healthy."""
    s = Swarm(docker_client, app_image, stack_image, emulator_image, tmp_path_factory.mktemp("swarm"))
    try:
        s.deploy(s.image)
        wait_until(lambda: len(s.healthy_replicas()) == REPLICAS, 180, f"{REPLICAS} healthy replicas")
        wait_until(lambda: len(s.active()) == 1, 60, "one replica polling")
        yield s
    finally:
        s.close(log_archive)


def test_swarm_replicas(swarm):
    emulator, bot_id = swarm.emulator, swarm.bot_id
    emulator.reset_stats(bot_id)
    ids = [emulator.inject(bot_id, "/version", user={"id": 500_000 + n}) for n in range(200)]
    counts = all_answered(emulator, bot_id, ids, 120)
    stats = emulator.stats(bot_id)
    instances = swarm.api_instances()
    figure(f"{REPLICAS} replicas: 200 updates, replies per update {sorted(set(counts.values()))}; "
          f"max polling at once {stats['max_polling_at_once']}; API answered by "
          f"{len(set(instances))} replicas ({', '.join(f'{i}: {instances.count(i)}' for i in sorted(set(instances)))})")
    assert stats["max_polling_at_once"] == 1, stats
    assert stats["conflicts"] == 0, stats
    assert all(n == 1 for n in counts.values()), {u: n for u, n in counts.items() if n != 1}
    assert len(set(instances)) > 1, instances
    assert len(swarm.active()) == 1
    # The token, the dashboard's password and the database's URI came as Swarm secrets: the
    # service's definition and its containers' show none of them.
    shown = json.dumps([swarm.service.attrs, *(c.attrs for c in swarm.containers())])
    leaked = [name for name, value in (("token", swarm.token), ("password", swarm.password), ("URI", swarm.uri))
              if value in shown]
    assert not leaked, f"in the service's or a container's definition: {leaked}"


def test_swarm_replica_killed(swarm):
    emulator, bot_id = swarm.emulator, swarm.bot_id
    [holder] = swarm.active()
    with Injector(emulator, bot_id, every_s=0.25, max_count=200, users=None, first_user=700_000) as burst:
        wait_until(lambda: len(burst.ids) >= 10, 30, "updates flowing")
        t0 = time.monotonic()
        holder.kill()  # SIGKILL: no lease release, no clean stop
        killed = time.monotonic()  # a poll starting after this is not the holder's
        successor = wait_until(lambda: [c for c in swarm.active() if c.id != holder.id], LEASE_TTL_S + 10,
                               "another replica polling", interval_s=0.2)[0]
        # When the successor's first getUpdates arrived, by the emulator's record (the replicas'
        # status, read by `docker exec` in each, told it up to 1.5 s late in a loaded CI: 15.2 s)
        first = wait_until(lambda: next((p["start"] for p in emulator.polls(bot_id) if p["start"] > killed), None), 10,
                           "the successor's first getUpdates in the emulator's record")
        takeover = first - t0  # from before the kill
        wait_until(lambda: len(burst.ids) >= 80, 60, "updates after the takeover")
    counts = all_answered(emulator, bot_id, burst.ids, 60)
    duplicated = sum(n - 1 for n in counts.values())
    figure(f"lease holder SIGKILLed: replica {successor.name} polling after {takeover:.1f} s "
          f"(lease TTL {LEASE_TTL_S:.0f} s); {len(burst.ids)} updates, all answered, {duplicated} replies repeated")
    # The lease expires at most one TTL after the kill, and a standby tries again when it would expire.
    assert takeover < LEASE_TTL_S + 1, takeover
    stats = emulator.stats(bot_id)
    assert stats["max_polling_at_once"] == 1, stats
    wait_until(lambda: len(swarm.healthy_replicas()) == REPLICAS, 120, "Swarm replacing the killed replica")


def derived_image(client: docker.DockerClient, good: str, name: str, steps: str) -> str:
    """The good image with `steps` (Dockerfile lines, run as root) on top, tagged after `name`."""
    tag = good.rsplit("-", 1)[0] + f"-{name}"
    dockerfile = f"FROM {good}\nUSER root\n{steps}\nUSER botstack\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


def crash_looping_image(client: docker.DockerClient, good: str) -> str:
    """The good image with a bot that exits at start; the API and the dashboard are fine."""
    return derived_image(client, good, "crashbot",
                         "RUN printf 'raise SystemExit(\"this build\\x27s bot exits at start\")\\n' "
                         "> /app/services/bot/__main__.py")


def test_swarm_rolling_update_rolls_back(swarm, docker_client):
    bad = crash_looping_image(docker_client, swarm.image)
    emulator, bot_id = swarm.emulator, swarm.bot_id
    before = {c.id for c in swarm.containers()}
    with Injector(emulator, bot_id, every_s=0.5, max_count=400, users=None, first_user=700_000) as burst:
        t0 = time.monotonic()
        swarm.deploy(bad)

        def rolled_back() -> bool:
            status = swarm.service.attrs.get("UpdateStatus") or {}
            return status.get("State") == "rollback_completed" and status

        status = wait_until(rolled_back, 480, "Swarm rolling the update back", interval_s=1)
        elapsed = time.monotonic() - t0
        wait_until(lambda: len(swarm.healthy_replicas(swarm.image)) == REPLICAS, 120,
                   f"{REPLICAS} healthy replicas of the previous version")
    counts = all_answered(emulator, bot_id, burst.ids, 60)
    figure(f"update to a crash-looping bot: rolled back by Swarm after {elapsed:.0f} s "
          f"({status.get('Message')}); {len(burst.ids)} updates during it, all answered, "
          f"{sum(n - 1 for n in counts.values())} replies repeated")
    spec_image = swarm.service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert spec_image.split("@")[0] == swarm.image, spec_image
    assert all(c.attrs["Config"]["Image"].split("@")[0] == swarm.image for c in swarm.containers())
    # A crash-looping task is never Docker-healthy (`healthcheck status` answers 1 while the bot is
    # STARTING or BACKOFF), so with start-first Swarm never stops an old replica for it.
    survivors = len(before & {c.id for c in swarm.containers()})
    figure(f"original replicas still running after the rollback: {survivors} of {REPLICAS}")
    assert survivors >= REPLICAS - 1, "the old version did not keep serving"
    assert len(swarm.active()) == 1


def test_swarm_rolling_update_to_a_good_build_loses_nothing(swarm, docker_client):
    """The everyday redeploy on Swarm: a good new build replaces every replica, one at a time,
    each new task started before an old one stops, while users write. Each old holder of the
    lease stops cleanly (it finishes its replies, marks its updates done and releases the
    lease), so one replica polls at any time and every update is answered once."""
    sha = uuid.uuid4().hex[:12]
    new = derived_image(docker_client, swarm.image, "nextbuild", f"ENV BOTSTACK_GIT_SHA={sha}")
    emulator, bot_id = swarm.emulator, swarm.bot_id
    emulator.reset_stats(bot_id)
    old = {c.id for c in swarm.containers()}

    def replaced() -> bool:
        return len(swarm.healthy_replicas(new)) == REPLICAS and not old & {c.id for c in swarm.containers()}

    with Injector(emulator, bot_id, every_s=0.25, max_count=1000, users=None, first_user=1_700_000) as burst:
        wait_until(lambda: len(burst.ids) >= 10, 30, "updates flowing")
        t0 = time.monotonic()
        swarm.deploy(new)
        wait_until(replaced, 480, f"{REPLICAS} healthy replicas of the new build and no old one", interval_s=1)
        elapsed = time.monotonic() - t0
        after = len(burst.ids)
        wait_until(lambda: len(burst.ids) >= after + 20, 30, "updates after the last old replica stopped")
    counts = all_answered(emulator, bot_id, burst.ids, 60)
    stats = emulator.stats(bot_id)
    polls = sorted(emulator.polls(bot_id), key=lambda p: p["start"])
    idle = max(b["start"] - a["end"] for a, b in zip(polls, polls[1:]) if a["end"] is not None)
    shas = {v["git_sha"] for v in swarm.api_versions()}
    figure(f"rolling update to a good build: {REPLICAS} replicas replaced in {elapsed:.0f} s; "
           f"{len(burst.ids)} updates during it, replies per update {sorted(set(counts.values()))}; "
           f"max polling at once {stats['max_polling_at_once']}, conflicts {stats['conflicts']}; "
           f"longest time nobody polled {idle:.1f} s")
    assert stats["max_polling_at_once"] == 1, stats
    # A holder that stops releases the lease: a standby polls within a second or two, not when the
    # lease runs out (up to the TTL later).
    assert idle < LEASE_TTL_S / 3, f"nobody polled for {idle:.1f} s: the lease was not handed over"
    assert stats["conflicts"] == 0, stats
    assert all(n == 1 for n in counts.values()), {u: n for u, n in counts.items() if n != 1}
    assert shas == {sha}, f"the API still answers with an old build: {shas}"
    wait_until(lambda: len(swarm.active()) == 1, 30, "one replica of the new build polling")


def test_swarm_switched_to_webhook_mode_loses_nothing_to_a_kill(swarm):
    """Webhook mode on Swarm, reached as a user would reach it: a rolling update that sets
    TELEGRAM_WEBHOOK_URL while users write. Any replica may receive an update (it stores it in the
    shared inbox before answering 2xx) and any replica's dispatcher may handle it. Then a replica is
    SIGKILLed mid-burst: Telegram delivers again what was not confirmed, and the inbox hands over
    what the killed one had claimed."""
    emulator, bot_id = swarm.emulator, swarm.bot_id
    image, url = swarm.service_image(), "https://botstack:8000/telegram/webhook"
    old = {c.id for c in swarm.containers()}

    def switched() -> bool:
        return len(swarm.healthy_replicas()) == REPLICAS and not old & {c.id for c in swarm.containers()}

    emulator.reset_stats(bot_id)
    with Injector(emulator, bot_id, every_s=0.25, max_count=1000, users=None, first_user=2_700_000) as burst:
        wait_until(lambda: len(burst.ids) >= 10, 30, "updates flowing")
        t0 = time.monotonic()
        # A replica killed within the update's `monitor` counts as a failed update, and Swarm rolls
        # it back (seen in CI: back to polling mode, still losing nothing). This update is watched
        # for 10 s only, and the kill comes once it is complete.
        swarm.deploy(image, webhook_url=url, monitor="10s")
        wait_until(switched, 480, f"{REPLICAS} healthy replicas in webhook mode and no old one", interval_s=1)
        elapsed, since_switch = time.monotonic() - t0, len(burst.ids)
        wait_until(lambda: (swarm.service.attrs.get("UpdateStatus") or {}).get("State") == "completed", 120,
                   "Swarm calling the update complete", interval_s=1)
        wait_until(lambda: any(d["ok"] for d in emulator.deliveries(bot_id)), 30, "a webhook delivery")
        victim, before_kill = swarm.containers()[0], len(burst.ids)
        victim.kill()  # SIGKILL: whatever it received or claimed is in the shared inbox
        wait_until(lambda: len(burst.ids) >= before_kill + 60, 60, "updates after the kill")
    counts = all_answered(emulator, bot_id, burst.ids, 120)
    handled = swarm.handled_by(burst.ids[since_switch:])
    deliveries = emulator.deliveries(bot_id)
    failed = sum(not d["ok"] for d in deliveries)
    figure(f"switched to webhook mode by a rolling update in {elapsed:.0f} s, then a replica SIGKILLed: "
           f"{len(burst.ids)} updates, all answered, {sum(n - 1 for n in counts.values())} replies repeated; "
           f"{len(deliveries)} webhook deliveries ({failed} failed and retried); the "
           f"{len(burst.ids) - since_switch} updates since the switch handled by {len(handled)} replicas "
           f"({', '.join(f'{k}: {v}' for k, v in sorted(handled.items()))})")
    assert sum(handled.values()) == len(burst.ids) - since_switch, handled
    assert len(handled) > 1, f"one replica handled every update: {handled}"
    came_by_webhook = {d["update_id"] for d in deliveries if d["ok"] and d["url"] == url}
    assert set(burst.ids[since_switch:]) <= came_by_webhook, "updates since the switch were not delivered by webhook"
    wait_until(lambda: len(swarm.healthy_replicas()) == REPLICAS, 120, "Swarm replacing the killed replica")
