"""``tracking.notify_command``: a command run once per human open or click, the event as
JSON on its stdin (for desktop or chat notifications).

The tracking endpoint calls ``NotifyCommand.event`` after a human hit is stored; ``event``
only puts the event on a bounded queue and returns, so a slow or hanging command never
holds up the writer or the endpoint. One worker thread takes events one at a time and
runs the command without a shell (``shlex.split`` of the configured string), its stdin
the event as one line of JSON, its output discarded, killed with its process group
after ``timeout`` seconds. Events that are not human (a ``verdict`` other than
``human``) are ignored here too, so a caller's slip cannot notify a machine's hit.

Failures (an exit status other than 0, a timeout, a command that cannot start) and
events dropped on a full queue are logged at most once per ``log_every`` seconds with
how many there were since the last such line: a broken command at a busy moment must
not flood the journal. The log names the program, never its arguments, which may hold
a webhook token.

    event() -> queue (bounded; full: dropped += 1) -> worker thread -> run command
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger("syncd.services.notify")

TIMEOUT_SECONDS = 10.0
QUEUE_SIZE = 1000
LOG_EVERY_SECONDS = 60.0
_STOP = object()


class NotifyCommand:
    """Runs the notify command per event, in its own thread, one at a time."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        timeout: float = TIMEOUT_SECONDS,
        queue_size: int = QUEUE_SIZE,
        log_every: float = LOG_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not command:
            raise ValueError("notify_command is empty")
        self.command = tuple(command)
        self._timeout = timeout
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._log_every = log_every
        self._clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_log: float | None = None
        self._unlogged: dict[str, int] = {}
        self.counts = {"run": 0, "failed": 0, "dropped": 0}

    @classmethod
    def from_config(cls, config: Any) -> NotifyCommand | None:
        """The notifier ``tracking.notify_command`` asks for, or None if it is not set."""
        text = config.tracking.notify_command
        if not text or not text.strip():
            return None
        return cls(shlex.split(text))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def event(self, event: Mapping[str, Any]) -> None:
        """Queue one event; never blocks. Not human: ignored. Queue full: dropped."""
        if event.get("verdict", "human") != "human":
            return
        try:
            self._queue.put_nowait(dict(event))
        except queue.Full:
            self._trouble("dropped", "the notify queue is full")

    def stop(self, timeout: float = TIMEOUT_SECONDS + 1) -> None:
        """Run what is queued, within ``timeout`` seconds; what is left then is dropped
        (the worker is a daemon thread: it never keeps the process from exiting)."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None
        with self._lock:
            self._flush_log()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._log_every)
            except queue.Empty:  # quiet a while: report what the last minute held back
                with self._lock:
                    if self._last_log is None or self._clock() - self._last_log >= self._log_every:
                        self._flush_log()
                continue
            if item is _STOP:
                return
            assert isinstance(item, dict)
            self._run_one(item)

    def _run_one(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event, ensure_ascii=False, default=str) + "\n").encode()
        try:
            child = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a timeout kills it all
            )
        except OSError as exc:
            self._trouble("failed", f"cannot start it: {exc.strerror or exc}")
            return
        try:
            child.communicate(data, timeout=self._timeout)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            self._trouble("failed", f"it ran longer than {self._timeout:g} s and was killed")
            return
        except OSError:  # BrokenPipe: it exited without reading stdin; its status says
            child.wait()
        if child.returncode != 0:
            self._trouble("failed", f"it exited with status {child.returncode}")
            return
        self.counts["run"] += 1

    def _trouble(self, kind: str, why: str) -> None:
        with self._lock:
            self.counts[kind] += 1
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            now = self._clock()
            if self._last_log is None or now - self._last_log >= self._log_every:
                self._last_log = now
                self._flush_log(why)

    def _flush_log(self, why: str | None = None) -> None:
        if not self._unlogged:
            return
        what = ", ".join(f"{n} {kind}" for kind, n in sorted(self._unlogged.items()))
        last = f" (last: {why})" if why else ""
        log.warning(
            "tracking.notify_command %s: %s since the last report%s",
            os.path.basename(self.command[0]),
            what,
            last,
        )
        self._unlogged.clear()


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
