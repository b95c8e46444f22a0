"""`botstack deploy` (on the host of a `docker compose` deployment): one command instead of
`git pull; pkill -9; restart; hope`.

    lock → history → preflight (engine, disk, clean tree, compose file) → the rollback image
    exists → doctor → backup → build → `docker compose up --wait` → verify the whole stack: the
    API *and* the bot report the new SHA, the sidecar's verdict is healthy (the bot active or
    standby, nothing crash-looping) and stays so for a stability window → record.
    Any failure: back to the version that ran before, verified the same way; a failed first
    deploy stops the broken stack and says so.

    botstack deploy --rollback     the good version before the current one (again: one further)
    botstack deploy --to SHA|TAG   a named earlier good version
    botstack deploy history        what was deployed, when, from what, and why it failed

The lock is an flock on a file: the kernel drops it if a deploy dies, so a stale lock never
blocks; its content (pid, time) tells the next deploy that one died mid-way. The history is
read only once the lock is held. The in-container commands are called with --json.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import httpx

from services.common.logs import redact

SERVICE = "botstack"
GOOD = ("deployed", "rolled back", "switched")
BLOCKING = ("database", "disk", "writable")  # doctor checks a deploy must not go past


class DeployError(Exception):
    pass


@dataclass
class Deploy:
    state_dir: Path
    wait_timeout_s: int = 180
    stable_s: float = 30.0
    min_free_mb: int = 1024
    out: Callable[[str], None] = print
    steps: list[dict] = field(default_factory=list)

    @property
    def history_path(self) -> Path:
        return self.state_dir / "deploy-history.jsonl"

    # --- progress -------------------------------------------------------------------------------
    @contextmanager
    def step(self, name: str):
        t0 = time.monotonic()
        self.out(f"-> {name} ...")
        entry = {"step": name, "ok": False}
        self.steps.append(entry)
        try:
            yield
            entry["ok"] = True
        finally:
            entry["seconds"] = round(time.monotonic() - t0, 1)
            self.out(f"   {name} {'done' if entry['ok'] else 'FAILED'} in {entry['seconds']:.1f} s")

    # --- locking and history --------------------------------------------------------------------
    def lock(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_dir / "deploy.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise DeployError(f"another deploy is running ({handle.read().strip() or 'unknown holder'}); "
                              "wait for it to finish") from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            self.out(f"note: a previous deploy ({previous}) did not finish; its lock was stale")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {_now()}")
        handle.flush()
        return handle

    def unlock(self, handle) -> None:
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    def history(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def record(self, **entry) -> dict:
        """Append to the history file, and to MongoDB through the running stack (the dashboard
        shows it there); the file is the record that always exists."""
        entry = {"time": _now(), **entry, "steps": self.steps}
        line = redact(json.dumps(entry))
        with self.history_path.open("a") as f:
            f.write(line + "\n")
        result = subprocess.run(["docker", "compose", "exec", "-T", SERVICE, "botstack", "deploys", "record"],
                                input=line, capture_output=True, text=True, env={**os.environ, "BOTSTACK_TAG": entry["tag"]})
        if result.returncode:
            self.out("note: the stack did not take the history entry (it is in the file)")
        return entry

    def current(self) -> dict | None:
        good = [e for e in self.history() if e["result"] in GOOD]
        return good[-1] if good else None

    def previous_of(self, sha: str) -> dict | None:
        """The version that ran before `sha` was first deployed (what a rollback returns to)."""
        for entry in reversed(self.history()):
            if entry["result"] == "deployed" and entry["to_sha"] == sha:
                return self.known(entry.get("from_sha"))
        return None

    def known(self, ref: str | None) -> dict | None:
        """The latest good entry whose SHA starts with `ref`, or whose tag is `ref`."""
        if not ref:
            return None
        for entry in reversed(self.history()):
            if entry["result"] in GOOD and (entry["to_sha"].startswith(ref) or entry["tag"] == ref):
                return entry
        return None

    # --- docker ---------------------------------------------------------------------------------
    def compose(self, *args: str, tag: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if tag:
            env["BOTSTACK_TAG"] = tag
        result = subprocess.run(["docker", "compose", *args], env=env, capture_output=True, text=True)
        if check and result.returncode:
            raise DeployError(f"docker compose {args[0]} failed: {(result.stderr or result.stdout).strip()[-400:]}")
        return result

    def running(self) -> bool:
        return bool(self.compose("ps", "--status", "running", "--quiet", SERVICE, check=False).stdout.strip())

    def in_container(self, *command: str, check: bool = True) -> dict:
        """A `botstack` command inside the running container, read as JSON (`check`: its
        failure is an error; status answers 1 while the stack is unhealthy, which is data)."""
        result = self.compose("exec", "-T", SERVICE, "botstack", *command, "--json", check=False)
        try:
            answer = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeployError(f"botstack {' '.join(command)} gave no answer: {result.stderr.strip()[-300:]}") from None
        if check and result.returncode:
            raise DeployError(f"botstack {' '.join(command)} failed: {answer.get('error') or 'see its --json output'}")
        return answer

    def image_exists(self, tag: str) -> bool:
        return subprocess.run(["docker", "image", "inspect", f"botstack:{tag}"], capture_output=True).returncode == 0

    def preflight(self, build: bool, allow_dirty: bool) -> None:
        engine = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}} {{.DockerRootDir}}"],
                                capture_output=True, text=True)
        if engine.returncode:
            raise DeployError(f"the Docker engine does not answer: {engine.stderr.strip()[-200:]}")
        root = Path(engine.stdout.split()[-1]) if engine.stdout.split() else Path("/")
        while not root.exists() and root != root.parent:
            root = root.parent
        free_mb = shutil.disk_usage(root).free // (1 << 20)
        if build and free_mb < self.min_free_mb:
            raise DeployError(f"{free_mb} MiB free for Docker ({root}); a build needs {self.min_free_mb} MiB "
                              "(BOTSTACK_DEPLOY_MIN_FREE_MB): free some with `docker system prune`")
        if build and not allow_dirty:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True).stdout.strip()
            if dirty:
                raise DeployError("the git tree has uncommitted changes, so the image would not match its SHA: "
                                  "commit them, or pass --allow-dirty")
        self.compose("config", "--quiet")

    def up(self, tag: str) -> None:
        self.compose("up", "--detach", "--wait", "--wait-timeout", str(self.wait_timeout_s), tag=tag)

    def api_sha(self, tag: str) -> str:
        port = self.compose("port", SERVICE, "8000", tag=tag).stdout.strip().rsplit(":", 1)[1]
        # The published port on this machine: never through a proxy set for the way out.
        return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5, trust_env=False).json()["git_sha"]

    def problem(self, tag: str, sha: str) -> str | None:
        """What is wrong with the running stack as build `sha`; None when nothing is."""
        try:
            api = self.api_sha(tag)
        except (httpx.HTTPError, DeployError, KeyError, IndexError, ValueError) as exc:
            return f"the API does not answer /version ({type(exc).__name__})"
        if api != sha:
            return f"the API reports {api}, expected {sha}"
        try:
            status = self.in_container("status", check=False)
        except DeployError as exc:
            return str(exc)
        health = status.get("health") or {}
        bot = status.get("bot") or {}
        if bot.get("git_sha") != sha:
            return f"the bot reports {bot.get('git_sha') or 'nothing'}, expected {sha}"
        if bot.get("role") not in ("active", "standby"):
            return f"the bot is {bot.get('role') or 'not running'} (neither active nor standby)"
        if health.get("status") != "healthy":
            return f"the stack is {health.get('status')}: {'; '.join(health.get('reasons') or [])}"
        return None

    def verify(self, tag: str, sha: str) -> None:
        deadline = time.monotonic() + self.wait_timeout_s
        while (problem := self.problem(tag, sha)) is not None:
            if time.monotonic() > deadline:
                raise DeployError(problem)
            time.sleep(2)

    def stay_stable(self, tag: str, sha: str) -> None:
        """Healthy is not enough: a bot that dies every 20 s is healthy between its deaths."""
        pids = self.pids()
        end = time.monotonic() + self.stable_s
        while time.monotonic() < end:
            problem = self.problem(tag, sha)
            if problem is None and self.pids() != pids:
                problem = f"a program restarted during the stability window: {pids} -> {self.pids()}"
            if problem is not None:
                raise DeployError(f"not stable for {self.stable_s:.0f} s: {problem}")
            time.sleep(2)

    def pids(self) -> dict:
        return {p["name"]: p["pid"] for p in self.in_container("status", check=False).get("programs", [])}

    def judge(self, tag: str, sha: str) -> None:
        with self.step("verify (API and bot report the SHA, verdict healthy)"):
            self.verify(tag, sha)
        with self.step(f"stability window ({self.stable_s:.0f} s)"):
            self.stay_stable(tag, sha)

    # --- the commands ---------------------------------------------------------------------------
    def deploy(self, sha: str, tag: str | None, build: bool, allow_dirty: bool) -> int:
        tag = tag or sha[:12]
        handle = self.lock()
        try:
            current = self.current()  # read under the lock
            backup = None
            try:
                with self.step("preflight (engine, disk, git tree, compose file)"):
                    self.preflight(build, allow_dirty)
                    if current and not self.image_exists(current["tag"]):
                        raise DeployError(f"the rollback image botstack:{current['tag']} is gone; a failed deploy "
                                          "could not go back: rebuild it or deploy --to another version")
                if self.running():
                    with self.step("doctor"):
                        failing = [c for c in self.in_container("doctor", check=False)["checks"] if not c["ok"]]
                        for c in failing:
                            self.out(f"   doctor: {c['name']}: {c['detail']} -> {c['advice']}")
                        # What a new build cannot fix stops the deploy; a sick program is why one deploys.
                        blocking = [c for c in failing if c["name"].startswith(BLOCKING)]
                        if blocking:
                            raise DeployError("doctor: " + "; ".join(f"{c['name']}: {c['detail']}" for c in blocking))
                    with self.step("backup"):
                        backup = self.in_container("backup")["path"]
                        self.out(f"   backup: {backup}")
                if build:
                    with self.step(f"build botstack:{tag}"):
                        self.compose("build", "--build-arg", f"GIT_SHA={sha}", "--build-arg", f"BUILD_TIME={_now()}",
                                     SERVICE, tag=tag)
                elif not self.image_exists(tag):
                    raise DeployError(f"botstack:{tag} does not exist (--no-build): build or pull it first")
                with self.step(f"up botstack:{tag}"):
                    self.up(tag)
                self.judge(tag, sha)
            except DeployError as exc:
                return self._failed(exc, current, sha, tag, backup)
            self.record(from_sha=current["to_sha"] if current else None, to_sha=sha, tag=tag, result="deployed",
                        reason="", backup=backup)
            self.out(f"deployed {sha} ({tag})")
            return 0
        finally:
            self.unlock(handle)

    def _failed(self, exc: DeployError, current: dict | None, sha: str, tag: str, backup: str | None) -> int:
        self.out(f"deploy of {sha} failed: {exc}")
        base = {"from_sha": current["to_sha"] if current else None, "to_sha": sha, "tag": tag,
                "reason": str(exc), "backup": backup}
        if current is None:
            self.compose("stop", check=False)
            self.record(**base, result="failed, stopped")
            self.out("this was the first deploy, so there is nothing to go back to: the broken stack was stopped")
            return 1
        self.out(f"rolling back to {current['to_sha']} ({current['tag']})")
        try:
            with self.step(f"up botstack:{current['tag']} (rollback)"):
                self.up(current["tag"])
            with self.step("verify the rollback"):
                self.verify(current["tag"], current["to_sha"])
            result = "failed, rolled back"
        except DeployError as again:
            result = f"failed, rollback failed too: {again}"
        self.record(**base, result=result)
        self.out(result)
        return 1

    def switch(self, target: dict | None, result: str, missing: str) -> int:
        """Go back (--rollback) or to a named version (--to), verified like a deploy."""
        handle = self.lock()
        try:
            current = self.current()
            if target is None:
                self.out(missing)
                return 1
            if not self.image_exists(target["tag"]):
                self.out(f"botstack:{target['tag']} is gone; nothing was changed")
                return 1
            try:
                with self.step(f"up botstack:{target['tag']}"):
                    self.up(target["tag"])
                self.judge(target["tag"], target["to_sha"])
            except DeployError as exc:
                return self._failed(exc, current, target["to_sha"], target["tag"], None)
            self.record(from_sha=current["to_sha"] if current else None, to_sha=target["to_sha"], tag=target["tag"],
                        result=result, reason="", backup=None)
            self.out(f"{result}: now {target['to_sha']} ({target['tag']})")
            return 0
        finally:
            self.unlock(handle)

    def rollback(self) -> int:
        handle = self.lock()  # the history is read under the lock
        try:
            current = self.current()
            target = self.previous_of(current["to_sha"]) if current else None
        finally:
            self.unlock(handle)
        return self.switch(target, "rolled back", "no earlier good version in the history to go back to")

    def to(self, ref: str) -> int:
        handle = self.lock()
        try:
            target = self.known(ref)
        finally:
            self.unlock(handle)
        return self.switch(target, "switched", f"{ref} is not a good version in the history (botstack deploy history)")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("action", nargs="?", choices=["history"], help="history: print what was deployed")
    which = command.add_mutually_exclusive_group()
    which.add_argument("--rollback", action="store_true", help="go back to the good version before the current one")
    which.add_argument("--to", metavar="SHA|TAG", help="go to a named earlier good version")
    command.add_argument("--sha", help="git SHA to deploy (default: git rev-parse HEAD)")
    command.add_argument("--tag", help="image tag (default: the SHA's first 12 characters)")
    command.add_argument("--no-build", action="store_true", help="the image is already built or pulled")
    command.add_argument("--allow-dirty", action="store_true", help="build from a tree with uncommitted changes")


def run(args) -> int:
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if not args.json:
            print(redact(line), flush=True)

    deploy = Deploy(
        state_dir=Path(os.environ.get("BOTSTACK_DEPLOY_DIR", ".botstack")),
        wait_timeout_s=int(os.environ.get("BOTSTACK_DEPLOY_WAIT_S", "180")),
        stable_s=float(os.environ.get("BOTSTACK_DEPLOY_STABLE_S", "30")),
        min_free_mb=int(os.environ.get("BOTSTACK_DEPLOY_MIN_FREE_MB", "1024")),
        out=out,
    )
    try:
        if args.action == "history":
            entries = deploy.history()
            for e in entries:
                out(f"{e['time']}  {e['result']:<22} {str(e.get('from_sha') or '-')[:12]:<12} -> "
                    f"{e['to_sha'][:12]} ({e['tag']})" + (f"  {e['reason']}" if e.get("reason") else ""))
            code = 0
        elif args.rollback:
            code = deploy.rollback()
        elif args.to:
            code = deploy.to(args.to)
        else:
            sha = args.sha or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                             check=True).stdout.strip()
            code = deploy.deploy(sha, args.tag, build=not args.no_build, allow_dirty=args.allow_dirty)
    except DeployError as exc:
        out(f"deploy refused: {exc}")
        code = 1
    if args.json:
        print(redact(json.dumps({"ok": code == 0, "steps": deploy.steps, "messages": lines,
                                 "history": deploy.history()[-1:] if args.action != "history" else deploy.history()})))
    return code
