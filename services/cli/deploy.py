"""`botstack deploy` (on the host of a `docker compose` deployment): one command instead of
`git pull; pkill -9; restart; hope`.

    lock → doctor → backup → build (or take) the image tagged with its git SHA →
    `docker compose up -d --wait` → /version must report that SHA → on any failure, roll back
    to the previous good tag and verify again → append the attempt to the history.

The lock is an flock on a file: the kernel drops it if a deploy dies, so a stale lock never
blocks; its content (pid, time) tells the next deploy that one died mid-way.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx

STATE_DIR = Path(os.environ.get("BOTSTACK_DEPLOY_DIR", ".botstack"))
SERVICE = "botstack"


class DeployError(Exception):
    pass


@dataclass
class Deploy:
    state_dir: Path = STATE_DIR
    wait_timeout_s: int = 180
    out: callable = print

    @property
    def history_path(self) -> Path:
        return self.state_dir / "deploy-history.jsonl"

    # --- the steps ------------------------------------------------------------------------------
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

    def in_container(self, *command: str) -> str:
        result = self.compose("exec", "-T", SERVICE, *command, check=False)
        if result.returncode:
            raise DeployError(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr).strip()}")
        return result.stdout

    def build(self, tag: str, sha: str) -> None:
        env_args = ["--build-arg", f"GIT_SHA={sha}", "--build-arg", f"BUILD_TIME={_now()}"]
        self.compose("build", *env_args, SERVICE, tag=tag)

    def up(self, tag: str) -> None:
        self.compose("up", "--detach", "--wait", "--wait-timeout", str(self.wait_timeout_s), tag=tag)

    def serving(self, tag: str) -> str:
        port = self.compose("port", SERVICE, "8000", tag=tag).stdout.strip().rsplit(":", 1)[1]
        return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).json()["git_sha"]

    def verify(self, tag: str, sha: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                serving = self.serving(tag)
                if serving == sha:
                    return
                problem = f"/version reports {serving}, expected {sha}"
            except (httpx.HTTPError, DeployError, KeyError, IndexError, ValueError) as exc:
                problem = f"/version not answering ({type(exc).__name__})"
            if time.monotonic() > deadline:
                raise DeployError(problem)
            time.sleep(1)

    # --- history --------------------------------------------------------------------------------
    def history(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def record(self, **entry) -> None:
        with self.history_path.open("a") as f:
            f.write(json.dumps({"time": _now(), **entry}) + "\n")

    def last_good(self, skip: int = 0) -> dict | None:
        good = [e for e in self.history() if e["result"] in ("deployed", "rolled back by request")]
        return good[-1 - skip] if len(good) > skip else None

    # --- the command ----------------------------------------------------------------------------
    def run(self, sha: str, tag: str | None = None, build: bool = True) -> int:
        tag = tag or sha[:12]
        handle = self.lock()
        current = self.last_good()
        from_sha = current["to_sha"] if current else None
        backup = None
        try:
            try:
                if self.running():
                    self.out(self.in_container("botstack", "doctor").strip())
                    backup = self.in_container("botstack", "backup").split("backup ", 1)[1].split(" ", 1)[0]
                    self.out(f"backup: {backup}")
                if build:
                    self.build(tag, sha)
                self.up(tag)
                self.verify(tag, sha)
            except DeployError as exc:
                self.out(f"deploy of {sha} failed: {exc}")
                if current is None:
                    self.record(from_sha=from_sha, to_sha=sha, tag=tag, result="failed", reason=str(exc),
                                backup=backup)
                    return 1
                self.out(f"rolling back to {current['to_sha']} ({current['tag']})")
                try:
                    self.up(current["tag"])
                    self.verify(current["tag"], current["to_sha"])
                    result = "failed, rolled back"
                except DeployError as again:
                    result = f"failed, rollback failed too: {again}"
                self.record(from_sha=from_sha, to_sha=sha, tag=tag, result=result, reason=str(exc), backup=backup)
                self.out(result)
                return 1
            self.record(from_sha=from_sha, to_sha=sha, tag=tag, result="deployed", reason="", backup=backup)
            self.out(f"deployed {sha} ({tag})")
            return 0
        finally:
            self.unlock(handle)

    def rollback(self) -> int:
        previous = self.last_good(skip=1)
        if previous is None:
            self.out("no earlier good deploy in the history to return to")
            return 1
        current = self.last_good()
        handle = self.lock()
        try:
            self.up(previous["tag"])
            self.verify(previous["tag"], previous["to_sha"])
        except DeployError as exc:
            self.record(from_sha=current["to_sha"], to_sha=previous["to_sha"], tag=previous["tag"],
                        result="rollback failed", reason=str(exc), backup=None)
            self.out(f"rollback failed: {exc}")
            return 1
        finally:
            self.unlock(handle)
        self.record(from_sha=current["to_sha"], to_sha=previous["to_sha"], tag=previous["tag"],
                    result="rolled back by request", reason="", backup=None)
        self.out(f"rolled back to {previous['to_sha']} ({previous['tag']})")
        return 0


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(args: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="botstack deploy", description="Deploy, verify, roll back.")
    parser.add_argument("--rollback", action="store_true", help="return to the previous good version")
    parser.add_argument("--sha", help="git SHA to deploy (default: git rev-parse HEAD)")
    parser.add_argument("--tag", help="image tag (default: the SHA's first 12 characters)")
    parser.add_argument("--no-build", action="store_true", help="the image is already built or pulled")
    options = parser.parse_args(args)
    deploy = Deploy(wait_timeout_s=int(os.environ.get("BOTSTACK_DEPLOY_WAIT_S", "180")))
    try:
        if options.rollback:
            return deploy.rollback()
        sha = options.sha or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                            check=True).stdout.strip()
        return deploy.run(sha, options.tag, build=not options.no_build)
    except DeployError as exc:
        print(f"deploy refused: {exc}")
        return 1
