"""The image's entry point: decide whether this container runs its own mongod, then become
supervisord (PID 1, the only thing that starts programs).

The container's own mongod runs only when MONGODB_URI points at it (127.0.0.1 or localhost,
port 27017), or BOTSTACK_MONGODB_LOCAL says so. With an external database (Atlas, a replica
set, the way to scale out) the `mongodb` program is not started, and the health sidecar neither
probes nor restarts it: an outage there is a dependency down (degraded), not a program to heal.
The `app` target has no mongod at all; pointed at the local one it refuses with one line.
"""

from __future__ import annotations

import configparser
import os
import shutil
import sys

EX_CONFIG = 78  # services.common.settings.EX_CONFIG, without importing it (see wants_local_mongod)

PROGRAM = "botstack"
CONFIG = "/app/supervisord.conf"


DATABASE_SETTINGS = {"MONGODB_URI", "BOTSTACK_MONGODB_LOCAL"}


def wants_local_mongod() -> bool:
    """Whether to start this container's own mongod. With neither setting given, the defaults
    decide: the local one. The settings (pydantic, 0.4 s) are loaded only when one is given:
    every second here delays every program of every container start."""
    if not DATABASE_SETTINGS & {name.upper() for name in os.environ}:
        return True
    from services.common.local_mongod import runs_local_mongod
    from services.common.settings import ConfigError, load_settings

    try:
        return runs_local_mongod(load_settings("start"))
    except ConfigError:  # each program reports a bad shared setting itself, in its own line
        return shutil.which("mongod") is not None


def main() -> None:
    local = wants_local_mongod()
    if local and shutil.which("mongod") is None:
        sys.stderr.write(f"{PROGRAM}: configuration error: MONGODB_URI: points at this container's own "
                         "mongod, but this image (the app target) has none; set MONGODB_URI to your "
                         "database, or run the standalone target\n")
        raise SystemExit(EX_CONFIG)
    os.environ["BOTSTACK_MONGOD_AUTOSTART"] = "true" if local else "false"
    control = control_socket(CONFIG)
    make_run_dirs(control)  # supervisord starts its programs at once: healthcheck/wakeup.py
    os.execvp("supervisord", ["supervisord", "-c", CONFIG])


def control_socket(config: str) -> str:
    """Where supervisord listens (its [unix_http_server] file); "" when it does not."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(config)
    return parser.get("unix_http_server", "file", fallback="")


def make_run_dirs(control: str) -> None:
    """The image has /run/botstack, but a hardened container may mount a fresh, empty /run over
    it (Kubernetes' readOnlyRootFilesystem with an emptyDir there): make the control socket's
    folder and BOTSTACK_RUN_DIR again, private to this user, before supervisord needs them."""
    for path in {os.path.dirname(control), os.environ.get("BOTSTACK_RUN_DIR", "")} - {""}:
        try:
            os.makedirs(path, mode=0o750, exist_ok=True)
            problem = "" if os.access(path, os.W_OK | os.X_OK) else "not writable by this user"
        except OSError as exc:
            problem = f"cannot create it ({exc.strerror})"
        if problem:  # else supervisord stops with "Cannot open an HTTP server: ... EACCES"
            uid, gid = os.getuid(), os.getgid()
            sys.stderr.write(f"{PROGRAM}: configuration error: {path}: {problem} (uid {uid}); run the container "
                             f"as the image's user (10001) or in group 0, or mount a tmpfs this user may write there, e.g. "
                             f"tmpfs: {path}:uid={uid},gid={gid},mode=0750\n")
            raise SystemExit(EX_CONFIG)


if __name__ == "__main__":
    main()
