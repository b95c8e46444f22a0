"""`botstack doctor`'s memory line: a ceiling the container's limit never lets act is a failure."""

from __future__ import annotations

from services.cli.doctor import check_memory
from services.common.settings import load_settings


def test_a_ceiling_at_or_above_the_containers_limit_fails_naming_the_program(monkeypatch):
    monkeypatch.setenv("BOTSTACK_MEMORY_CEILING_MB", "200, bot=512")

    check = check_memory(load_settings(), limit_mib=512)

    assert not check.ok
    assert check.line() == ("FAIL memory: ceilings api 200 MiB, web 200 MiB, bot 512 MiB; the container's limit is "
                            "512 MiB -> set BOTSTACK_MEMORY_CEILING_MB for bot well below 512 (leave the other "
                            "programs and mongod their room)")


def test_ceilings_below_the_limit_or_no_limit_pass(monkeypatch):
    monkeypatch.setenv("BOTSTACK_MEMORY_CEILING_MB", "bot=160")
    assert check_memory(load_settings(), limit_mib=512).line() == (
        "ok   memory: ceilings bot 160 MiB; the container's limit is 512 MiB")
    assert check_memory(load_settings(), limit_mib=None).ok
    monkeypatch.delenv("BOTSTACK_MEMORY_CEILING_MB")
    assert check_memory(load_settings(), limit_mib=None).line() == "ok   memory: no memory limit on the container"
    assert "a leak ends in the kernel's OOM kill" in check_memory(load_settings(), limit_mib=512).line()
