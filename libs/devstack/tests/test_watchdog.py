"""The watchdog's decisions, on a fake set of processes and a fake clock: restart with backoff,
start the backoff over once a process is stable, give up on a crash loop."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from atelier_devstack.processes import DevstackError
from atelier_devstack.watchdog import CrashLoopError, RestartPolicy, Watchdog, describe_exit


class Processes:
    def __init__(self, *names: str) -> None:
        self.codes: dict[str, int | None] = dict.fromkeys(names)
        self.restarted: list[str] = []
        self.fail_restart = False
        self.said: list[str] = []

    def restart(self, name: str) -> None:
        if self.fail_restart:
            self.codes[name] = 3
            raise DevstackError(f"{name} exited with code 3 while waiting for readiness\nlog...")
        self.restarted.append(name)
        self.codes[name] = None

    def watchdog(self) -> Watchdog:
        return Watchdog(
            names=lambda: list(self.codes),
            exit_code=self.codes.__getitem__,
            log_path=lambda name: Path("/var/logs") / f"{name}.log",
            restart=self.restart,
            say=self.said.append,
            policy=RestartPolicy(),
        )


def test_exits_are_described() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


def test_a_killed_process_is_restarted_after_a_second_and_the_console_says_why() -> None:
    procs = Processes("nats", "dispatch", "worker-offline")
    dog = procs.watchdog()
    dog.check(0.0)
    procs.codes["worker-offline"] = -signal.SIGKILL
    dog.check(10.0)
    assert procs.said == [
        "worker-offline stopped unexpectedly (signal SIGKILL); restarting it in 1 s (crash 1 of "
        "5 allowed within 60 s). Log: /var/logs/worker-offline.log"
    ]
    dog.check(10.5)
    assert procs.restarted == []  # still waiting
    dog.check(11.0)
    assert procs.restarted == ["worker-offline"]
    assert procs.said[-1] == "worker-offline started again."
    assert dog.restarts == 1


def test_the_backoff_doubles_and_starts_over_once_stable() -> None:
    procs = Processes("media")
    dog = procs.watchdog()
    dog.check(0.0)
    delays = []
    now = 0.0
    for _ in range(3):
        procs.codes["media"] = 1
        dog.check(now)
        delays.append(procs.said[-1].split("restarting it in ")[1].split(" s")[0])
        now += 40.0  # past the backoff, and far enough apart not to be a crash loop
        dog.check(now)
    assert delays == ["1", "2", "4"]
    dog.check(now + 61.0)  # up a minute: stable
    procs.codes["media"] = 1
    dog.check(now + 62.0)
    assert "restarting it in 1 s" in procs.said[-1]


def test_five_crashes_within_a_minute_stop_everything() -> None:
    procs = Processes("context")
    dog = procs.watchdog()
    now = 0.0
    dog.check(now)
    with pytest.raises(CrashLoopError) as caught:
        for _ in range(5):
            procs.codes["context"] = 2
            dog.check(now)
            now += 8.0
            dog.check(now)  # restarted after its delay (1, 2, 4, 8 s)
    assert "context stopped 5 times within 60 s" in str(caught.value)
    assert "/var/logs/context.log" in str(caught.value)


def test_a_restart_that_fails_counts_as_a_crash_and_is_tried_again() -> None:
    procs = Processes("gateway")
    dog = procs.watchdog()
    dog.check(0.0)
    procs.codes["gateway"] = -signal.SIGKILL
    dog.check(1.0)
    procs.fail_restart = True
    dog.check(2.0)
    assert "failed to start again: gateway exited with code 3" in procs.said[-1]
    assert "restarting it in 2 s" in procs.said[-1]
    procs.fail_restart = False
    dog.check(4.0)
    assert procs.restarted == ["gateway"]
