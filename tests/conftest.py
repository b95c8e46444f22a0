"""Run-wide rules: `last` tests run after all others; CI refuses a run without integration tests;
and, once every test of the run is over, no container's output holds a bot token.

The suite runs in two pytest-xdist workers (pyproject's addopts): each worker keeps its own
counts and hands them to the controller (workeroutput), which judges the run as a whole.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

LOG_DIR = Path(__file__).parent / "integration" / ".logs"
TOKEN_SHAPES = re.compile(r"\d{8,}:[A-Za-z0-9_-]{30,}|bot\d+:")
_integration = {"passed": 0, "skipped": 0, "deselected": 0}


def _worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    if not _worker(config):  # workers inherit it: the start of the whole run
        os.environ.setdefault("BOTSTACK_TEST_RUN_STARTED", str(time.time()))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


def pytest_deselected(items):
    _integration["deselected"] += sum(1 for i in items if i.get_closest_marker("integration"))


def pytest_runtest_logreport(report):
    if "integration" not in report.keywords:
        return
    if report.when == "call" and report.passed:
        _integration["passed"] += 1
    elif report.skipped:
        _integration["skipped"] += 1


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist, on the controller: a worker's deselections (the reports already came here)."""
    _integration["deselected"] += getattr(node, "workeroutput", {}).get("deselected", 0)


def run_logs() -> str:
    """Every container log archived during this run, by any worker."""
    started = float(os.environ.get("BOTSTACK_TEST_RUN_STARTED", "0"))
    return "\n".join(p.read_text(errors="replace") for p in sorted(LOG_DIR.glob("*.log"))
                     if p.stat().st_mtime >= started)


def pytest_sessionfinish(session, exitstatus):
    """With BOTSTACK_REQUIRE_INTEGRATION=1 (CI), skipped or deselected integration tests fail the run."""
    if _worker(session.config):
        session.config.workeroutput["deselected"] = _integration["deselected"]
        return
    problems = []
    if LOG_DIR.exists() and (leak := TOKEN_SHAPES.search(run_logs())):
        problems.append(f"a container log holds something token-shaped ({leak.group(0)[:12]}…)")
    if os.environ.get("BOTSTACK_REQUIRE_INTEGRATION") == "1":
        if _integration["passed"] == 0:
            problems.append("no integration test passed")
        if _integration["skipped"]:
            problems.append(f"{_integration['skipped']} integration tests were skipped")
        if _integration["deselected"]:
            problems.append(f"{_integration['deselected']} integration tests were deselected")
    if problems:
        session.config.get_terminal_writer().line("botstack: " + "; ".join(problems), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
