"""The supervisor against throwaway Python children: kill, restart, stop order, escalation."""

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atelier_devstack.ports import free_port
from atelier_devstack.processes import (
    ChildExitedError,
    ManagedProcess,
    Supervisor,
    WaitTimeoutError,
    wait_for,
    wait_http_ok,
    wait_tcp,
)

pytestmark = pytest.mark.integration

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def printed(child: ManagedProcess, line: str) -> bool:
    # Whole lines only: the log's header quotes the child's code, which contains the text too.
    return line in child.log_tail().splitlines()


def is_gone(pid: int) -> bool:
    """Exited, or a zombie waiting for init: either way it runs no more."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def test_kill_then_restart_reuses_argv_and_appends_to_the_log(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start("sleeper", SLEEPER)
        wait_for(lambda: printed(child, "up"), what="first start", timeout=10)
        first_pid = child.pid

        sup.kill("sleeper")

        assert sup.wait_exit("sleeper") == -signal.SIGKILL
        assert not sup.is_running("sleeper")

        sup.restart("sleeper")

        assert sup.is_running("sleeper")
        assert child.pid != first_pid
        wait_for(
            lambda: child.log_tail().splitlines().count("up") == 2, what="second start", timeout=10
        )
    assert not child.is_running()


def test_stop_all_goes_in_reverse_start_order(tmp_path: Path) -> None:
    record = tmp_path / "stopped.txt"
    on_term = """
        import signal, sys, time
        def stop(*_):
            with open(sys.argv[1], "a") as f:
                f.write(sys.argv[2] + "\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("ready", flush=True)
        time.sleep(600)
    """
    with Supervisor(tmp_path) as sup:
        for name in ("first", "second", "third"):
            child = sup.start(name, [*python(on_term), str(record), name])
            wait_for(functools.partial(printed, child, "ready"), what=name, timeout=10)

    assert record.read_text().split() == ["third", "second", "first"]
    assert [sup.process(name).popen.returncode for name in sup.names()] == [0, 0, 0]


def test_a_child_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(600)
    """
    sup = Supervisor(tmp_path)
    child = sup.start("stubborn", python(stubborn))
    wait_for(lambda: printed(child, "ready"), what="stubborn", timeout=10)

    started = time.monotonic()
    sup.stop_all(timeout=0.5)

    assert child.popen.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_stopping_a_child_also_stops_what_it_spawned(tmp_path: Path) -> None:
    spawner = """
        import subprocess, time
        grandchild = subprocess.Popen(["sleep", "600"])
        print(grandchild.pid, flush=True)
        time.sleep(600)
    """
    with Supervisor(tmp_path) as sup:
        child = sup.start("spawner", python(spawner))
        wait_for(lambda: child.log_tail().splitlines()[-1].isdigit(), what="pid", timeout=10)
        grandchild_pid = int(child.log_tail().splitlines()[-1])

    wait_for(lambda: is_gone(grandchild_pid), what="grandchild gone", timeout=5)


def test_a_child_dying_during_a_wait_shows_the_end_of_its_log(tmp_path: Path) -> None:
    crasher = """
        import sys
        for i in range(100):
            print("line", i)
        sys.exit(3)
    """
    with Supervisor(tmp_path) as sup:
        child = sup.start("crasher", python(crasher))

        with pytest.raises(ChildExitedError) as caught:
            wait_tcp("127.0.0.1", free_port(), timeout=10, process=child)

    message = str(caught.value)
    assert caught.value.returncode == 3
    assert "crasher exited with code 3" in message
    assert "line 60\n" in message and "line 99" in message
    assert "line 59\n" not in message


def test_a_wait_times_out_with_the_last_problem(tmp_path: Path) -> None:
    with pytest.raises(WaitTimeoutError, match="ConnectError"):
        wait_http_ok(f"http://127.0.0.1:{free_port()}/healthz", timeout=0.3)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_runner_stops_its_children_when_it_is_signalled(tmp_path: Path, sig: int) -> None:
    runner = f"""
        import sys, time
        from pathlib import Path
        from atelier_devstack.processes import Supervisor
        sup = Supervisor(Path({str(tmp_path)!r}))
        sup.stop_on_exit()
        child = sup.start("sleeper", {SLEEPER!r})
        print(child.pid, flush=True)
        while True:
            time.sleep(1)
    """
    parent = subprocess.Popen(python(runner), stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())

    parent.send_signal(sig)

    parent.wait(timeout=15)
    assert parent.returncode != 0  # interrupted, not a clean finish
    wait_for(lambda: is_gone(child_pid), what="child gone", timeout=5)
    assert not is_gone(os.getpid())


def test_a_failed_readiness_check_stops_the_child(tmp_path: Path) -> None:
    def never_ready(process: ManagedProcess) -> None:
        raise WaitTimeoutError("not today")

    with Supervisor(tmp_path) as sup:
        with pytest.raises(WaitTimeoutError):
            sup.start("sleeper", SLEEPER, ready=never_ready)

        assert not sup.is_running("sleeper")
