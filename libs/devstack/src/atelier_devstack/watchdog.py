"""Keeps `make run`'s processes running, as a small supervisor would.

A process that dies (any exit while the stack runs, a crash, `kill -9`) is started again after a
backoff (1 s, doubling to at most 30 s; a process that then stays up a minute starts over at
1 s), and the console says which, why (its exit code or signal) and where its log is. A process
that dies 5 times within a minute is in a crash loop: everything stops with a message saying so,
rather than restarting it forever. nats-server and SeaweedFS are watched like the services; their
data is on disk, so a restarted one comes back with its streams and objects.

The watchdog only decides; `check` is called by the runner's loop and restarts through the
callable it was given. The stack's waits for nats-server and SeaweedFS to answer but not for a
service to be ready: a service that cannot start yet (say, NATS is restarting too) exits and is
simply started again after its backoff, and a slow start never holds up the other restarts.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from atelier_devstack.processes import DevstackError


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    # Up this long after a restart: the next crash starts the backoff over.
    stable_after_s: float = 60.0
    # This many crashes of one process within `crash_window_s`: give up on everything.
    max_crashes: int = 5
    crash_window_s: float = 60.0


class CrashLoopError(DevstackError):
    """A process kept dying right after each restart."""


def describe_exit(returncode: int) -> str:
    """`exit code 3`, or `signal SIGKILL` for a process killed by a signal."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class _Watched:
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None  # set while it is down and waiting for its restart
    up_since: float | None = None
    delay_s: float = 0.0


class Watchdog:
    def __init__(
        self,
        *,
        names: Callable[[], list[str]],
        exit_code: Callable[[str], int | None],
        log_path: Callable[[str], Path],
        restart: Callable[[str], object],
        say: Callable[[str], None],
        policy: RestartPolicy | None = None,
    ) -> None:
        self._names = names
        self._exit_code = exit_code
        self._log_path = log_path
        self._restart = restart
        self._say = say
        self.policy = policy or RestartPolicy()
        self._watched: dict[str, _Watched] = {}
        self.restarts = 0

    def check(self, now: float) -> None:
        """Look at every process once: note the ones that died, restart those whose backoff ran
        out. Raises `CrashLoopError` when one keeps dying."""
        for name in self._names():
            watched = self._watched.setdefault(name, _Watched(up_since=now))
            if watched.restart_at is None:
                returncode = self._exit_code(name)
                if returncode is None:
                    if watched.up_since is not None and (
                        now - watched.up_since >= self.policy.stable_after_s
                    ):
                        watched.delay_s = 0.0  # stable again: the next crash starts over
                    continue
                self._died(name, watched, describe_exit(returncode), now)
            elif now >= watched.restart_at:
                self._start_again(name, watched, now)

    def _died(self, name: str, watched: _Watched, why: str, now: float) -> None:
        window = self.policy.crash_window_s
        watched.crashes = [t for t in watched.crashes if now - t < window] + [now]
        if len(watched.crashes) >= self.policy.max_crashes:
            raise CrashLoopError(
                f"{name} stopped {len(watched.crashes)} times within {window:.0f} s (last: "
                f"{why}); it is crash-looping, so everything stops. See {self._log_path(name)}"
            )
        if watched.delay_s == 0.0:
            watched.delay_s = self.policy.first_delay_s
        else:
            watched.delay_s = min(watched.delay_s * 2, self.policy.max_delay_s)
        watched.restart_at = now + watched.delay_s
        watched.up_since = None
        self._say(
            f"{name} stopped unexpectedly ({why}); restarting it in {watched.delay_s:.0f} s "
            f"(crash {len(watched.crashes)} of {self.policy.max_crashes} allowed within "
            f"{window:.0f} s). Log: {self._log_path(name)}"
        )

    def _start_again(self, name: str, watched: _Watched, now: float) -> None:
        watched.restart_at = None
        try:
            self._restart(name)
        except DevstackError as exc:
            first_line = str(exc).splitlines()[0]
            self._died(name, watched, f"failed to start again: {first_line}", now)
            return
        watched.up_since = now
        self.restarts += 1
        self._say(f"{name} started again.")
