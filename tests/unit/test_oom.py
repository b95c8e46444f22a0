"""services/common/oom.py: the programs ask the kernel to take them first when the container runs
out of memory (checked on this machine's kernel), and the container's OOM kills and limit are
read from cgroup v2 and v1 files as the kernel writes them."""

from __future__ import annotations

import os
import subprocess
import sys

from healthcheck.child import HELPER_NICENESS, run_child
from services.common.oom import limit_mib, oom_kills


def volunteered(program: str) -> list[str]:
    """The oom_score_adj of a process that volunteered as `program`, and of its child."""
    return subprocess.run(
        [sys.executable, "-c", f"import os; from services.common.oom import volunteer; volunteer({program!r}); "
         "print(open('/proc/self/oom_score_adj').read().strip()); os.system('cat /proc/self/oom_score_adj')"],
        capture_output=True, text=True, timeout=30, check=True).stdout.split()


def test_a_program_that_volunteers_is_the_kernels_first_choice_and_its_children_too():
    assert volunteered("bot") == ["600", "600"], "the bot goes first: killed, it loses nothing"
    assert volunteered("api") == volunteered("web") == ["500", "500"]
    assert open("/proc/self/oom_score_adj").read().strip() == "0", "only the program that asked"


def test_the_sidecars_helpers_are_first_for_the_oom_killer_and_last_for_the_cpu_from_their_start(
        tmp_path, monkeypatch):
    """An alert's notifier and the events writer run through run_child (the plan through the same
    helper_argv), right after a crash or with the container, while memory may still be short and a
    program starts on the same cores: 1000 and niceness 10 from before the interpreter starts."""
    (tmp_path / "helper_adj.py").write_text(
        "import os, sys\n"
        "open(sys.stdin.read(), 'w').write(open('/proc/self/oom_score_adj').read().strip() + f' {os.nice(0)}')\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    run_child("helper_adj", str(tmp_path / "adj"), 30)
    assert (tmp_path / "adj").read_text().split() == ["1000", str(HELPER_NICENESS + os.nice(0))]


def test_oom_kills_are_read_from_cgroup_v2_or_v1(tmp_path):
    v2, v1, absent = tmp_path / "memory.events", tmp_path / "memory.oom_control", tmp_path / "none"
    v2.write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n")
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n")
    assert oom_kills((v2, v1)) == 2
    assert oom_kills((absent, v1)) == 7
    assert oom_kills((absent,)) is None


def test_the_memory_limit_is_read_and_no_limit_is_none(tmp_path):
    limit = tmp_path / "limit"
    limit.write_text("471859200\n")
    assert limit_mib((limit,)) == 450
    limit.write_text("max\n")  # v2 without a limit
    assert limit_mib((limit,)) is None
    limit.write_text("9223372036854771712\n")  # v1 without a limit
    assert limit_mib((limit,)) is None
    assert limit_mib((tmp_path / "none",)) is None
