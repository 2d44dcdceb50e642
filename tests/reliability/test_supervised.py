"""`make run` heals itself (issue 17, item 1): every process of the stack, nats-server and
SeaweedFS included, is killed with SIGKILL in turn while 100 jobs run, and nothing restarts it
but the watchdog `atelier-dev run` uses. Each comes back by itself; all 100 jobs land.

The figures are printed at the end (run with `-s` to see them).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from atelier_devstack.stack import Stack, StackConfig
from atelier_devstack.watchdog import CrashLoopError
from tests.reliability.test_chaos import Submitter, _get

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

JOBS = int(os.environ.get("ATELIER_SUPERVISED_JOBS", "100"))
# Every process `make run` starts, killed once each, in this order.
VICTIMS = [
    "worker-offline",
    "gateway",
    "dispatch",
    "nats",
    "context",
    "media",
    "seaweed",
    "profiles",
]


def _watch(stack: Stack, said: list[str], failures: list[BaseException], stop: threading.Event):
    dog = stack.watchdog(say=said.append)
    while not stop.wait(0.2):
        try:
            dog.check(time.monotonic())
        except CrashLoopError as exc:
            failures.append(exc)
            return


def _kill_in_turn(stack: Stack, kills: list[str], stop: threading.Event) -> None:
    for name in VICTIMS:
        if stop.wait(2.0):
            return
        stack.kill(name)  # SIGKILL; nobody but the watchdog starts it again
        kills.append(name)


def test_every_process_killed_comes_back_by_itself_and_every_job_lands(tmp_path: Path) -> None:
    stack = Stack(
        StackConfig(
            var_dir=tmp_path / "supervised",
            prefer_standard_ports=False,
            extra_env={
                "ATELIER_DISPATCH_RETRY_BASE_S": "0.5",
                "ATELIER_DISPATCH_SWEEP_INTERVAL_S": "1",
                "ATELIER_WORKERS_ACK_WAIT_S": "10",
            },
        )
    )
    info = stack.start()
    lifted = httpx.put(
        f"{info.admin_url}/admin/v1/quotas",
        json={"credits_per_period": None, "rate_limit_count": None},
        headers={"Authorization": f"Bearer {info.admin_token}"},
        timeout=10,
    )
    assert lifted.status_code == 200, lifted.text
    said: list[str] = []
    kills: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(stack, said, failures, stop), daemon=True)
    killer = threading.Thread(target=_kill_in_turn, args=(stack, kills, stop), daemon=True)
    try:
        watcher.start()
        killer.start()
        submitter = Submitter(info)
        started = time.monotonic()
        for n in range(JOBS):
            submitter.submit(n)
            time.sleep(max(0.0, 16.0 / JOBS))  # spread over the kills (8, 2 s apart)
        killer.join(timeout=120)
        assert not killer.is_alive()

        pending = dict(submitter.jobs)
        finals: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                job = _get(info, f"/v1/generations/{job_id}")
                if job["status"] in ("completed", "partial", "failed", "cancelled"):
                    finals[job_id] = job
                    del pending[job_id]
            time.sleep(1.0)
        elapsed = time.monotonic() - started
        restarted = [line.split(" ")[0] for line in said if line.endswith(" started again.")]
        print(
            f"\nsupervised: jobs={JOBS} kills={kills} restarted={restarted} lost={len(pending)} "
            f"statuses={[j['status'] for j in finals.values()].count('completed')} completed "
            f"submit_retries={submitter.retries} elapsed={elapsed:.1f}s\n" + "\n".join(said)
        )
        assert failures == []
        assert pending == {}, f"jobs that never finished: {list(pending)}"
        assert all(job["status"] == "completed" for job in finals.values()), [
            (job["id"], job["status"], job.get("error")) for job in finals.values()
        ]
        assert len(finals) == JOBS
        assert set(restarted) == set(VICTIMS)
        assert all(stack.supervisor.is_running(name) for name in stack.supervisor.names())
        stopped = [line for line in said if "stopped unexpectedly (signal SIGKILL)" in line]
        assert len(stopped) == len(VICTIMS) and all("Log: " in line for line in stopped)
    finally:
        stop.set()
        stack.stop()
