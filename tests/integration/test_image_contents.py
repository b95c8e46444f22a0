"""What ships: the production target holds the product and nothing that exists only for tests.

The Bot API emulator is a test double with its own Dockerfile target; test code never enters the
build context (.dockerignore); a file watcher would make reloading possible, so there is none.
The check reads the image's whole filesystem, as `docker export` gives it.
"""

from __future__ import annotations

import io
import tarfile

import pytest

pytestmark = pytest.mark.integration

FORBIDDEN = {
    "the Bot API emulator": lambda p: "/services/emulator" in p,
    "test code": lambda p: p.startswith("app/tests/") or "/conftest.py" in p or "/site-packages/pytest" in p
    or "/site-packages/_pytest/" in p or "/site-packages/testcontainers/" in p,
    "a file watcher": lambda p: "/site-packages/watchfiles/" in p or "/site-packages/watchgod/" in p,
}


def image_files(docker_client, image: str) -> list[str]:
    container = docker_client.containers.create(image, command=["true"])
    try:
        stream = io.BufferedReader(_Chunks(container.export()), buffer_size=1 << 20)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            return [member.name.lstrip("./") for member in tar]
    finally:
        container.remove(force=True)


class _Chunks(io.RawIOBase):
    """docker-py's export chunks as a raw stream, for tarfile's stream mode."""

    def __init__(self, chunks) -> None:
        self.chunks, self.rest = iter(chunks), memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.rest:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.rest = memoryview(chunk)
        n = min(len(buffer), len(self.rest))
        buffer[:n], self.rest = self.rest[:n], self.rest[n:]
        return n


def test_app_image_ships_no_emulator_and_no_test_code(docker_client, app_image):
    files = image_files(docker_client, app_image)
    assert "app/services/bot/__main__.py" in files, "the listing does not show the product's code"
    found = {what: [p for p in files if match(p)][:5] for what, match in FORBIDDEN.items()}
    assert not any(found.values()), f"the production image contains {found}"


def test_emulator_image_is_its_own_target(docker_client, emulator_image):
    files = image_files(docker_client, emulator_image)
    assert "app/services/emulator/__main__.py" in files
    assert "app/services/bot/__main__.py" not in files, "the emulator image carries the product"
