"""A small supervisor for the infrastructure processes of a local run or a test session.

Each child runs in its own process group (a new session), for two reasons:
- a Ctrl-C in the terminal reaches only the parent, which then stops the children in reverse
  start order instead of every process dying at once in no particular order;
- signalling the group also reaches anything the child spawned, so nothing is left behind.

The flip side: if the parent is killed with SIGKILL, nobody stops the children. Runners call
`Supervisor.stop_on_exit()` so that Ctrl-C, SIGTERM and SIGHUP at least always go through
`stop_all`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import httpx

LOG_TAIL_LINES = 40
# Enough for 40 long log lines; reading a whole multi-megabyte log to show its end would be waste.
_LOG_TAIL_BYTES = 64 * 1024


class DevstackError(RuntimeError):
    """Base class for failures to start, reach or stop a supervised process."""


class ChildExitedError(DevstackError):
    """A supervised process exited while we were waiting for it to become ready."""

    def __init__(self, name: str, returncode: int, waiting_for: str, log_path: Path) -> None:
        self.name = name
        self.returncode = returncode
        self.log_path = log_path
        super().__init__(
            f"{name} exited with code {returncode} while waiting for {waiting_for}; "
            f"last {LOG_TAIL_LINES} lines of {log_path}:\n{read_log_tail(log_path)}"
        )


class PortTakenError(ChildExitedError):
    """A supervised server exited because another process holds its port (taken between our
    free-port check and its bind)."""

    def __init__(self, exited: ChildExitedError, port: int) -> None:
        self.port = port
        super().__init__(
            exited.name,
            exited.returncode,
            f"port {port}, which another process took after it was found free (that process "
            "was not trusted: it got the readiness probe and nothing else); start again to pick "
            "another port",
            exited.log_path,
        )


class NotOurServerError(DevstackError):
    """A server answered on a port, but not as the process we started there."""


class WaitTimeoutError(DevstackError, TimeoutError):
    """A condition was not met in time (the process waited for, if any, is still running)."""


def read_log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file, or a note when there is none."""
    try:
        with log_path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
            data = log.read()
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


@dataclass(eq=False)
class ManagedProcess:
    """One supervised child; the handle stays valid across `Supervisor.restart`."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None
    cwd: Path | None
    log_path: Path
    after_stop: Callable[[], None] | None
    ready: Callable[[ManagedProcess], None] | None
    popen: subprocess.Popen[bytes] = field(init=False)
    # False once the group has been swept after an exit: the pid (and so the group id) may then
    # be reused by an unrelated process, which must never receive our signals.
    _group_alive: bool = field(init=False, default=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return read_log_tail(self.log_path, lines)

    def raise_if_exited(self, waiting_for: str) -> None:
        returncode = self.popen.poll()
        if returncode is not None:
            raise ChildExitedError(self.name, returncode, waiting_for, self.log_path)

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.env is not None else None
        # Append: after a restart the log still shows what happened before it.
        with self.log_path.open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- {stamp} devstack starts: {shlex.join(self.argv)}\n".encode())
            log.flush()
            # The child keeps its own copy of the descriptor; ours closes with the `with`.
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self._group_alive = True

    def _signal_group(self, sig: int) -> None:
        # With start_new_session the child leads a group whose id is its pid. The errors mean
        # the group is already gone.
        if not self._group_alive:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def _stop(self, timeout: float) -> None:
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired as exc:
                    raise DevstackError(
                        f"{self.name} (pid {self.pid}) survived SIGKILL for {timeout}s"
                    ) from exc
        if not self._group_alive:
            return  # stopped before; stop_all may run twice (context manager, then atexit)
        # Anything the child spawned and left behind would otherwise outlive us.
        self._signal_group(signal.SIGKILL)
        self._group_alive = False
        if self.after_stop is not None:
            self.after_stop()


class Supervisor:
    """Starts named child processes and stops every one of them, in reverse start order.

    Use it as a context manager (tests) or call `stop_on_exit()` (runners); `stop_all` is
    idempotent, so doing both is fine.
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        # Default log dir: the current directory's var/log would surprise a test run, a temp dir
        # does not, and the path is in every error message anyway.
        if log_dir is None:
            log_dir = Path(tempfile.mkdtemp(prefix="atelier-devstack-"))
        self.log_dir = log_dir
        self._children: dict[str, ManagedProcess] = {}
        self._stopping = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        after_stop: Callable[[], None] | None = None,
        ready: Callable[[ManagedProcess], None] | None = None,
    ) -> ManagedProcess:
        """Start `argv` as `name`, with stdout and stderr appended to `log_path`.

        `env` is added to (not substituted for) the parent's environment, so PATH and friends
        stay. `ready` blocks until the process serves (raising if it cannot); it runs again
        after every restart. `after_stop` runs once the process group is gone (e.g. to remove
        socket files).
        """
        existing = self._children.get(name)
        if existing is not None and existing.is_running():
            raise DevstackError(f"{name} is already running (pid {existing.pid})")
        child = ManagedProcess(
            name=name,
            argv=tuple(os.fspath(arg) for arg in argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            log_path=log_path if log_path is not None else self.log_dir / f"{name}.log",
            after_stop=after_stop,
            ready=ready,
        )
        child._spawn()
        # Re-insert so a re-started name takes its new place in the stop order.
        self._children.pop(name, None)
        self._children[name] = child
        if ready is not None:
            try:
                ready(child)
            except BaseException:
                # A caller that handles the error (say, retries on another port) must not be
                # left with a half-started process holding ports.
                child._stop(timeout=5.0)
                raise
        return child

    def process(self, name: str) -> ManagedProcess:
        try:
            return self._children[name]
        except KeyError:
            raise DevstackError(f"no process named {name!r} was started") from None

    def names(self) -> list[str]:
        """Names in start order."""
        return list(self._children)

    def is_running(self, name: str) -> bool:
        return self.process(name).is_running()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process group of `name` and return at once (for chaos tests)."""
        self.process(name)._signal_group(sig)

    def wait_exit(self, name: str, timeout: float = 10.0) -> int:
        """Wait for `name` to exit and return its exit code (negative: killed by that signal)."""
        child = self.process(name)
        try:
            return child.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise WaitTimeoutError(f"{name} still running after {timeout}s") from exc

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM the process group of `name`; SIGKILL it if still alive after `timeout` s."""
        self.process(name)._stop(timeout)

    def restart(self, name: str, timeout: float = 10.0) -> ManagedProcess:
        """Stop `name` if it runs, start it again with the same argv, env, cwd and log, and wait
        until it is ready again.

        It keeps its place in the stop order: it plays the same part as before.
        """
        child = self.process(name)
        child._stop(timeout)
        child._spawn()
        if child.ready is not None:
            child.ready(child)
        return child

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every child, last started first: clients go before the servers they use.

        Each child gets `timeout` seconds after SIGTERM. Every child is attempted even when one
        fails to stop; the first failure is raised at the end.
        """
        self._stopping = True
        failure: DevstackError | None = None
        try:
            for child in reversed(list(self._children.values())):
                try:
                    child._stop(timeout)
                except DevstackError as exc:
                    failure = failure or exc
        finally:
            self._stopping = False
        if failure is not None:
            raise failure

    def stop_on_exit(self) -> None:
        """For runners: make interpreter exit, Ctrl-C, SIGTERM and SIGHUP stop every child.

        The signals are turned into exceptions (KeyboardInterrupt for SIGINT, SystemExit for the
        others) so `finally` blocks and context managers unwind as usual, and atexit runs
        `stop_all` at the end. A second signal while stopping means "hurry": the remaining
        children are SIGKILLed instead of waited for. Call it from the main thread, once; it
        replaces any handlers already installed for those signals.
        """
        atexit.register(self.stop_all)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            for child in self._children.values():
                child._signal_group(signal.SIGKILL)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


def wait_for(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    process: ManagedProcess | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `check` until it returns True.

    An exception from `check` counts as "not yet" (servers refuse connections while booting) and
    is quoted if time runs out. When `process` exits meanwhile we stop waiting at once and raise
    `ChildExitedError` with the end of its log, which is nearly always where the reason is.
    """
    deadline = time.monotonic() + timeout
    last_problem = "never checked"
    while True:
        try:
            if check():
                return
            last_problem = "not ready"
        except Exception as exc:
            last_problem = f"{type(exc).__name__}: {exc}"
        if process is not None:
            process.raise_if_exited(f"{what} (last: {last_problem})")
        if time.monotonic() >= deadline:
            message = f"{what} not ready after {timeout}s (last: {last_problem})"
            if process is not None:
                message += (
                    f"; {process.name} is still running, last {LOG_TAIL_LINES} lines of "
                    f"{process.log_path}:\n{process.log_tail()}"
                )
            raise WaitTimeoutError(message)
        time.sleep(interval)


def wait_http_ok(url: str, timeout: float = 10.0, *, process: ManagedProcess | None = None) -> None:
    """Wait until a GET of `url` answers 2xx."""
    with httpx.Client(timeout=min(timeout, 2.0)) as client:

        def answers_2xx() -> bool:
            return client.get(url).is_success

        wait_for(answers_2xx, what=url, timeout=timeout, process=process)


# The variable atelier_web's probes repeat (atelier_web.INSTANCE_ID_ENV; this library does not
# import the web one, a test checks the two agree).
INSTANCE_ID_ENV = "ATELIER_INSTANCE_ID"


def new_instance_id() -> str:
    """A random id for one started process, unguessable by anything else on the machine."""
    return secrets.token_urlsafe(16)


def wait_http_instance(
    url: str, instance: str, timeout: float = 10.0, *, process: ManagedProcess
) -> None:
    """Wait until a GET of `url` answers 2xx from the process started with `instance` as its
    `ATELIER_INSTANCE_ID` (the answer's JSON repeats it).

    A port checked free can be taken by another process before our child binds it. That server
    may well answer 200 to `/readyz`; it cannot repeat an id it never saw, so it is never taken
    for ours (and the caller, which waits for this before sending tokens, never talks to it).
    The child that lost the port exits: `PortTakenError` says so, with its log.
    """
    port = httpx.URL(url).port

    with httpx.Client(timeout=min(timeout, 2.0), trust_env=False) as client:

        def answers_as_ours() -> bool:
            response = client.get(url)
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or body.get("instance") != instance:
                raise NotOurServerError(
                    f"port {port} is answered by a server that is not the {process.name} "
                    "started by this run"
                )
            return response.is_success

        try:
            wait_for(answers_as_ours, what=url, timeout=timeout, process=process)
        except ChildExitedError as exc:
            if port is not None and "address already in use" in exc.args[0].lower():
                raise PortTakenError(exc, port) from exc
            raise


def wait_tcp(
    host: str, port: int, timeout: float = 10.0, *, process: ManagedProcess | None = None
) -> None:
    """Wait until `host:port` accepts a TCP connection."""

    def accepts() -> bool:
        with socket.create_connection((host, port), timeout=min(timeout, 1.0)):
            return True

    wait_for(accepts, what=f"tcp://{host}:{port}", timeout=timeout, process=process)
