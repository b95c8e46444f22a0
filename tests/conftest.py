"""Run-wide rules: `last` tests run after all others; CI refuses a run without integration tests."""

from __future__ import annotations

import os

import pytest

_integration = {"passed": 0, "skipped": 0, "deselected": 0, "collected": 0}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)
    _integration["collected"] = sum(1 for i in items if i.get_closest_marker("integration"))


def pytest_deselected(items):
    _integration["deselected"] += sum(1 for i in items if i.get_closest_marker("integration"))


def pytest_runtest_logreport(report):
    if "integration" not in report.keywords:
        return
    if report.when == "call" and report.passed:
        _integration["passed"] += 1
    elif report.skipped:
        _integration["skipped"] += 1


def pytest_sessionfinish(session, exitstatus):
    """With BOTSTACK_REQUIRE_INTEGRATION=1 (CI), skipped or deselected integration tests fail the run."""
    if os.environ.get("BOTSTACK_REQUIRE_INTEGRATION") != "1":
        return
    problems = []
    if _integration["passed"] == 0:
        problems.append("no integration test passed")
    if _integration["skipped"]:
        problems.append(f"{_integration['skipped']} integration tests were skipped")
    if _integration["deselected"]:
        problems.append(f"{_integration['deselected']} integration tests were deselected")
    if problems:
        session.config.get_terminal_writer().line(
            "BOTSTACK_REQUIRE_INTEGRATION: " + "; ".join(problems), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
