"""The image's entry point: decide whether this container runs its own mongod, then become
supervisord (PID 1, the only thing that starts programs).

The container's own mongod runs only when MONGODB_URI points at it (127.0.0.1 or localhost,
port 27017), or BOTSTACK_MONGODB_LOCAL says so. With an external database (Atlas, a replica
set, the way to scale out) the `mongodb` program is not started, and the health sidecar neither
probes nor restarts it: an outage there is a dependency down (degraded), not a program to heal.
The `app` target has no mongod at all; pointed at the local one it refuses with one line.

Started as root (Railway mounts a volume as root's and asks non-root images to set
RAILWAY_RUN_UID=0; `docker run --user 0`), it gives the image's writable folders to the image's
user and becomes that user before supervisord starts: no program runs as root, and mongod can
write the volume. It raises the soft limit of open files to the hard one (at most 65536)
for every program: Docker 25 and later give a container 1024.
"""

from __future__ import annotations

import configparser
import os
import pwd
import resource
import shutil
import sys

from services.common.secretfiles import given_names

EX_CONFIG = 78  # services.common.settings.EX_CONFIG, without importing it (see wants_local_mongod)

PROGRAM = "botstack"
CONFIG = "/app/supervisord.conf"
IMAGE_USER = "botstack"  # uid 10001, the Dockerfile's; its folders are group 0's too
DATA_DIRS = ("/data/db",)  # mongod's --dbpath (services/mongodb/supervisor.conf)
GIVEN_UNDER = ("/data/", "/run/")  # the only places whose owner a start as root changes
OPEN_FILES = 65536  # MongoDB's production notes ask for at least 64000


DATABASE_SETTINGS = {"MONGODB_URI", "BOTSTACK_MONGODB_LOCAL"}


def wants_local_mongod() -> bool:
    """Whether to start this container's own mongod. With neither setting given, the defaults
    decide: the local one. The settings (pydantic, 0.4 s) are loaded only when one is given:
    every second here delays every program of every container start."""
    if not DATABASE_SETTINGS & given_names():  # in the environment or as secret files
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
    if os.getuid() == 0:
        become_image_user(control)
    make_run_dirs(control)  # supervisord starts its programs at once: healthcheck/wakeup.py
    raise_open_files_limit()
    os.execvp("supervisord", ["supervisord", "-c", CONFIG])


def control_socket(config: str) -> str:
    """Where supervisord listens (its [unix_http_server] file); "" when it does not."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(config)
    return parser.get("unix_http_server", "file", fallback="")


def writable_dirs(control: str) -> list[str]:
    """The folders the programs write: the data, the backups, the run folder and the control socket's."""
    return [*DATA_DIRS, os.environ.get("BOTSTACK_BACKUP_DIR") or "/data/backups",
            os.environ.get("BOTSTACK_RUN_DIR") or "/run/botstack", os.path.dirname(control)]


def become_image_user(control: str) -> None:
    """Give the folders the programs write, and what is in them, to the image's user (group 0,
    as the image has them), then drop root for good. Only what another user owns is changed,
    links are not followed, and a folder that cannot be changed (a read-only mount) is left for
    the checks that follow to name."""
    user = pwd.getpwnam(IMAGE_USER)
    for top in dict.fromkeys(filter(None, writable_dirs(control))):
        if not os.path.realpath(top).startswith(GIVEN_UNDER):  # never /app's code, never / by a typo
            continue
        try:
            os.makedirs(top, mode=0o2770, exist_ok=True)
        except OSError:
            continue
        give(top, user.pw_uid)
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                give(os.path.join(folder, name), user.pw_uid)
    for fd in (1, 2):  # Docker's pipes are root's, mode 0600: supervisord reopens them as /dev/stdout
        try:
            os.fchown(fd, user.pw_uid, -1)
        except OSError:
            pass
    os.setgroups(os.getgrouplist(IMAGE_USER, user.pw_gid))
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


def raise_open_files_limit() -> None:
    """Docker 25 and later (under systemd) start a container with the usual limit of 1024 open files
    (soft; the hard limit is 524288): mongod needs a file for every collection and index and a
    socket for every client, the API and the dashboard a socket for every client, and at 1024
    they fail with "Too many open files". Any process may raise its soft limit up to its hard
    one, and every program supervisord starts inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def give(path: str, uid: int) -> None:
    try:
        if os.lstat(path).st_uid != uid:
            os.chown(path, uid, 0, follow_symlinks=False)
    except OSError:
        pass


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
