"""The submission relay's work in a child process: the daemon's end and the child's.

``SubmissionService`` keeps the SMTP side (AUTH, the sender checks, DATA) on the daemon's
event loop and hands each message to ``RelayWorker.forward``. The worker is a child
process (``syncd relay-worker``) that runs ``services.relayer.Relayer`` in a few threads:
the who-is-tracked lookup, rewriting, the smarthost exchange and the spool commit. It is
a process because that work is Python that would otherwise share one interpreter lock
with the listener; apart, each has a core to itself (the README's Speed section).

The two talk over socket pairs the child inherits, one per thread (a lane). A message
goes to the lane with the fewest in hand, the first among equals: one client at a time
keeps to one thread and wakes no other, and a thread never waits on another to read its
next message. Frames are a 4-byte big-endian length and a pickle. To the child: first
``Setup`` (the config and the tracking keys) on lane 0, then per message the lengths,
its id and envelope pickled, and its bytes as they are; back: ``(0, "", "ready")`` on
lane 0 once the child can take mail, then ``(id, reply, outcome)`` per message. Only the
two ends of a pair can write to it, so every pickle read is one syncd wrote.

Lifecycle of one child::

    spawned --Setup--> serving --EOF on its lanes (stop, reload, the daemon killed)-->
      finishes and answers the messages in hand, exits 0
    serving --dies (a crash, kill -9)--> the daemon answers its messages in hand 451
      (the client sends again; one already recorded is logged once, by Message-ID)
      and spawns the next after a pause that doubles with each death in a row (1 s, up
      to 60 s), answering 451 meanwhile

The child ignores SIGINT and SIGTERM: systemd and a terminal signal the whole process
group, and a message the smarthost accepted must still be recorded. It stops when the
daemon's end closes, which the kernel does for a daemon killed with SIGKILL too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from syncd.config.model import Config
from syncd.services.relayer import TrackingSetup, make_relayer
from syncd.services.schedule import Backoff
from syncd.sources.bcc import TEMPFAIL
from syncd.sources.submission import Forwarded, Outgoing
from syncd.store.spool import SpoolWriter

log = logging.getLogger("syncd.submission")
# More threads only take turns on the child's interpreter lock; fewer leave it idle
# while one waits on the smarthost or on fsync.
THREADS = 4
LOST = Forwarded(TEMPFAIL, "tempfail")
DOWN = Forwarded("451 4.3.0 The relay worker is restarting; please try again later", "tempfail")
START_SECONDS = 30.0  # a child not ready by then is left to come up, or to die and be replaced
_LENGTH = 4


@dataclass(frozen=True)
class Setup:
    """What a child needs before its first message."""

    config: Config
    tracking: TrackingSetup | None


def _frame(item: Any) -> bytes:
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(_LENGTH, "big") + data


def _read(stream: IO[bytes]) -> Any:
    """The next frame's item, or None at the end of the stream."""
    head = stream.read(_LENGTH)
    if len(head) < _LENGTH:
        return None
    size = int.from_bytes(head, "big")
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _message_frame(ident: int, message: Outgoing) -> tuple[bytes, bytes]:
    """A message as two writes: the lengths and its envelope pickled, then its bytes as
    they are (a 60 MB message is not copied into a pickle and again into a frame)."""
    envelope = pickle.dumps(
        (ident, message.mail_from, message.recipients, message.member, message.peer_ip),
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    sizes = len(envelope).to_bytes(_LENGTH, "big") + len(message.raw).to_bytes(8, "big")
    return sizes + envelope, message.raw


def _read_message(stream: IO[bytes]) -> tuple[int, Outgoing] | None:
    """The next message and its id, or None at the end of the stream."""
    sizes = stream.read(_LENGTH + 8)
    if len(sizes) < _LENGTH + 8:
        return None
    envelope = stream.read(int.from_bytes(sizes[:_LENGTH], "big"))
    size = int.from_bytes(sizes[_LENGTH:], "big")
    raw = stream.read(size)
    if len(raw) < size:
        return None
    ident, mail_from, recipients, member, peer_ip = pickle.loads(envelope)
    return ident, Outgoing(raw, mail_from, recipients, member, peer_ip)


# The daemon's end ---------------------------------------------------------------------


class _Lane(asyncio.Protocol):
    """One of a child's sockets, served by one of its threads: frames out, replies
    matched to their futures."""

    def __init__(self, lost: Callable[[], None]) -> None:
        self.pending: dict[int, asyncio.Future[Forwarded]] = {}
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._next = 0
        self._lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, message: Outgoing) -> asyncio.Future[Forwarded]:
        future: asyncio.Future[Forwarded] = self.closed.get_loop().create_future()
        if self.transport is None or self.closed.done():
            future.set_result(LOST)
            return future
        self._next += 1
        self.pending[self._next] = future
        for part in _message_frame(self._next, message):
            self.transport.write(part)
        return future

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while len(buffer) - at >= _LENGTH:
            end = at + _LENGTH + int.from_bytes(buffer[at : at + _LENGTH], "big")
            if len(buffer) < end:
                break
            ident, reply, outcome = pickle.loads(buffer[at + _LENGTH : end])
            at = end
            if ident == 0 and not self.ready.done():
                self.ready.set_result(None)
            future = self.pending.pop(ident, None)
            if future is not None and not future.done():
                future.set_result(Forwarded(reply, outcome))
        del buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_result(LOST)
        self.pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        self._lost()

    def retire(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write_eof()


class _Child:
    """One child process and its lanes."""

    def __init__(self, proc: subprocess.Popen[bytes], lost: Callable[[_Child], None]) -> None:
        self.proc = proc
        self.lanes: list[_Lane] = []
        self._lost: Callable[[_Child], None] | None = lost

    def lane_lost(self) -> None:
        # The first lane to close means the child is ending (dying, or retired).
        lost, self._lost = self._lost, None
        if lost is not None:
            lost(self)

    @property
    def ready(self) -> asyncio.Future[None]:
        return self.lanes[0].ready

    async def closed(self) -> None:
        await asyncio.gather(*(asyncio.shield(lane.closed) for lane in self.lanes))

    def send(self, message: Outgoing) -> asyncio.Future[Forwarded]:
        # The lane with the fewest messages in hand; among equals the first, so that
        # one client at a time keeps to one thread and wakes no other.
        return min(self.lanes, key=lambda lane: len(lane.pending)).send(message)

    def retire(self) -> None:
        """No more messages: the child answers those in hand, then exits."""
        for lane in self.lanes:
            lane.retire()


class RelayWorker:
    """``forward`` for the submission handler, done by a child process."""

    def __init__(
        self, setup: Setup, *, relayed: Callable[[], None] | None = None, threads: int = THREADS
    ) -> None:
        self._setup = setup
        self._relayed = relayed  # called after each recorded message (nudges the drain)
        self._threads = threads
        self._child: _Child | None = None
        self._spawning: asyncio.Future[None] | None = None
        self._retired: set[_Child] = set()
        self._reaping: set[asyncio.Future[Any]] = set()
        self._restart: asyncio.Task[None] | None = None
        self._pause = Backoff(1.0, 60.0)
        self._stopping = False
        self.deaths = 0

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid if self._child is not None else None

    async def start(self) -> bool:
        """Spawn the child now and wait until it takes mail (or dies: False)."""
        child = await self._current()
        if child is None:
            return False
        closed = asyncio.ensure_future(child.closed())
        either = (child.ready, closed)
        await asyncio.wait(either, timeout=START_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        return child.ready.done()

    async def forward(self, message: Outgoing) -> Forwarded:
        child = await self._current()
        if child is None:
            return DOWN
        done = await child.send(message)
        if done is not LOST:
            self._pause.succeeded()
        if done.outcome == "relayed" and self._relayed is not None:
            self._relayed()
        return done

    def reconfigure(self, setup: Setup) -> None:
        """New messages go to a child with ``setup``; the old one finishes its own."""
        self._setup = setup
        self._keep(asyncio.ensure_future(self._replace()))

    async def _replace(self) -> None:
        if self._spawning is not None:  # it may be starting with the old setup
            await asyncio.shield(self._spawning)
        old, self._child = self._child, None
        if old is not None:
            self._retired.add(old)
            old.retire()
        await self._current()

    async def stop(self, deadline: float) -> None:
        """Let each child answer what it holds and exit; past ``deadline``, kill it."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        if self._spawning is not None:
            await asyncio.shield(self._spawning)
        children = [c for c in (self._child, *self._retired) if c is not None]
        self._child = None
        for child in children:
            child.retire()
        for child in children:
            try:
                left = max(0.0, deadline - time.monotonic())
                await asyncio.wait_for(child.closed(), left)
            except TimeoutError:
                log.warning("the relay worker (pid %d) did not finish in time; killed it",
                            child.proc.pid)  # fmt: skip
                child.proc.kill()
            await asyncio.to_thread(child.proc.wait)
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)

    async def _current(self) -> _Child | None:
        if self._child is None and self._spawning is None:
            if self._stopping or not self._pause.ready():
                return None
            self._spawning = asyncio.ensure_future(self._spawn())
        if self._spawning is not None:
            await asyncio.shield(self._spawning)
        return self._child

    async def _spawn(self) -> None:
        pairs = [socket.socketpair() for _ in range(self._threads)]
        theirs = [t.fileno() for _, t in pairs]
        proc = None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", *_verbosity(), "relay-worker",
                 "--fds", ",".join(map(str, theirs))],
                stdin=subprocess.DEVNULL,
                pass_fds=theirs,
            )  # fmt: skip
            child = _Child(proc, self._lost)
            pairs[0][0].sendall(_frame(self._setup))  # a few kB: fits the socket's buffer
            for ours, their in pairs:
                their.close()
                _, lane = await asyncio.get_running_loop().create_unix_connection(
                    lambda: _Lane(child.lane_lost), sock=ours
                )
                child.lanes.append(lane)
        except OSError as error:
            for ours, their in pairs:
                ours.close()
                their.close()
            if proc is not None:  # it sees its lanes closed and exits
                self._keep(asyncio.ensure_future(asyncio.to_thread(proc.wait)))
            wait = self._pause.failed()
            log.error("the relay worker could not start (%s); trying again in %.0f s",
                      error, wait)  # fmt: skip
            return
        finally:
            self._spawning = None
        self._child = child
        log.debug("relay worker started, pid %d", proc.pid)

    def _lost(self, child: _Child) -> None:
        wait = None
        if child is self._child:
            self._child = None
            if not self._stopping:
                self.deaths += 1
                wait = self._pause.failed()
        self._retired.discard(child)
        self._keep(asyncio.ensure_future(self._reap(child.proc, wait)))
        if wait is not None:
            self._restart = asyncio.ensure_future(self._respawn(wait))

    async def _reap(self, proc: subprocess.Popen[bytes], wait: float | None) -> None:
        code = await asyncio.to_thread(proc.wait)
        if wait is not None:
            log.error("the relay worker (pid %d) stopped with %s; messages it held were "
                      "answered 451, and a new one starts in %.0f s",
                      proc.pid, _exit_status(code), wait)  # fmt: skip

    async def _respawn(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._current()

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)


def _verbosity() -> list[str]:
    """The daemon's log level as the CLI's flags, for the child's own logging."""
    level = logging.getLogger().getEffectiveLevel()
    return ["-v"] if level <= logging.DEBUG else ["-q"] if level >= logging.WARNING else []


def _exit_status(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


# The child's end ----------------------------------------------------------------------


def serve(socks: list[socket.socket]) -> None:
    """Run the relay for the daemon on the other ends of ``socks``, one thread each,
    until they close."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    streams = [sock.makefile("rb") for sock in socks]
    setup = _read(streams[0])
    if not isinstance(setup, Setup):
        return
    writer = SpoolWriter(setup.config.store.path)
    relayer = make_relayer(setup.config, writer, setup.tracking)
    socks[0].sendall(_frame((0, "", "ready")))

    def lane(sock: socket.socket, stream: IO[bytes]) -> None:
        try:
            serve_lane(sock, stream)
        except BaseException:
            # A lane nobody reads would leave its clients waiting: the whole child
            # goes, and the daemon answers 451 and starts another.
            log.exception("relay worker thread failed; the worker exits")
            os._exit(70)

    def serve_lane(sock: socket.socket, stream: IO[bytes]) -> None:
        while (item := _read_message(stream)) is not None:
            ident, message = item
            try:
                done = relayer.forward(message)
            except Exception as error:
                log.error("submission from %s failed: %s", message.member, type(error).__name__)
                done = LOST
            with contextlib.suppress(OSError):  # the daemon is gone; the record stays
                sock.sendall(_frame((ident, done.reply, done.outcome)))

    threads = [
        threading.Thread(target=lane, args=pair, name=f"relay-{i}")
        for i, pair in enumerate(zip(socks, streams, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    relayer.close()
    writer.close()
    for sock in socks:
        sock.close()
