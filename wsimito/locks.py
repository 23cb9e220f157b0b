"""Per-slide locks, so that two runs given the same slide never write its outputs at the same time.

Why: a requeued SLURM task, overlapping shard lists, two users pointing at one output folder, or two Dask
workers may all run the same slide at once. Both would build ``<slide>.zarr.partial`` in the same place and one
would delete the other's half-written store. Whoever holds a slide's lock is the only one writing it; the others
wait for it (or do other slides first) and then read the finished result.

The lock is a small file made atomically: its content (host, pid, the process's start time, a random token) is
written to a private temporary file which is then hard-linked to the lock's name. ``link`` fails if the name
exists, on local disks and on NFS, Lustre and GPFS alike, and nobody ever sees a half-written lock. Where hard
links are not allowed the lock falls back to ``open(O_CREAT | O_EXCL)``.

A holder that died (SIGKILL, out of memory, a node lost) leaves its file behind; such a lock is *stale* and the
next run takes it over:

- held on this host (same host name and pid namespace): stale as soon as its pid is gone, is a zombie, or now
  belongs to a process that started at another time (pid reuse);
- held on another host: its processes cannot be seen from here, so a holder touches the file every
  ``heartbeat_s`` seconds; one not touched for ``stale_after_s`` seconds (default 10 minutes: much more than
  any clock skew between nodes) is stale.

Breaking a stale lock first renames it aside and checks that what it moved is the stale lock it looked at (two
processes may find the same stale lock; the slower one could otherwise remove the fresh lock the faster one has
just taken). A fresh lock moved by mistake is put back. Only a third process creating a lock in the
microseconds between could still displace it; the displaced holder notices (``lost``) and its run says so.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot) and its state, or None where /proc has none."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if fields[0] not in ("Z", "X") else "dead"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in the lock file."""

    host: str
    pid: int
    namespace: str
    started: str | None
    token: str
    since: float

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}"

    @classmethod
    def me(cls) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), _pid_namespace(), _start_time(os.getpid()),
                   secrets.token_hex(8), time.time())

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname() and self.namespace == _pid_namespace()

    def alive(self) -> bool:
        """Whether the holding process still runs (meaningful only on this host)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        now = _start_time(self.pid)
        if now == "dead":
            return False
        return self.started is None or now is None or now == self.started


class SlideLock:
    """An exclusive claim on one slide's outputs: ``with SlideLock(path): ...`` or ``acquire``/``release``."""

    def __init__(self, path, heartbeat_s: float = 30.0, stale_after_s: float = 600.0):
        self.path = Path(path)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._mine: Holder | None = None
        self._content = b""
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = False  # set when our lock file vanished or changed while we held it
        self.waited_for: Holder | None = None  # the other holder, if acquire had to wait

    # -- taking and giving back -------------------------------------------------------------------------------

    def acquire(self, block: bool = True, poll_s: float = 0.5, timeout: float | None = None, on_wait=None) -> bool:
        """Take the lock; True when held. With ``block=False``, False at once when a live process holds it.

        While waiting it looks again after ``poll_s`` seconds, then less and less often (down to every
        ``10 * poll_s``, at most 5 s: each look is a read on what may be a network file system).
        ``on_wait(holder)`` is called once, when this call starts waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll_s
        self.waited_for = None
        while True:
            holder, content, mtime = self._read()
            if content is None:
                if self._try_create():
                    self._start_heartbeat()
                    return True
                continue  # someone else was quicker: look at their lock
            if self._stale(holder, mtime):
                self._break(content)
                continue
            if not block or (deadline is not None and time.monotonic() >= deadline):
                return False
            if self.waited_for is None:
                self.waited_for = holder or Holder("unknown host", 0, "", None, "", mtime)
                if on_wait:
                    on_wait(holder)
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 1.5, max(poll_s, min(10 * poll_s, 5.0)))

    def release(self) -> None:
        """Give the lock back (only if it is still ours)."""
        if self._mine is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._still_mine():
            self.path.unlink(missing_ok=True)
        else:
            self.lost = True
        self._mine = None

    def __enter__(self) -> "SlideLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def holder(self) -> Holder | None:
        """Who holds the lock now (None: nobody, or a file we cannot read)."""
        return self._read()[0]

    # -- internals ----------------------------------------------------------------------------------------------

    def _try_create(self) -> bool:
        mine = Holder.me()
        content = json.dumps(asdict(mine)).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_name(f"{self.path.name}.{mine.host}.{mine.pid}.{mine.token}.new")
        staged.write_bytes(content)
        try:
            os.link(staged, self.path)
        except FileExistsError:
            return False
        except OSError as exc:  # a file system without hard links
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
        finally:
            staged.unlink(missing_ok=True)
        self._mine, self._content, self.lost = mine, content, False
        return True

    def _read(self) -> tuple[Holder | None, bytes | None, float]:
        """(holder or None if unreadable, raw content or None if no file, mtime)."""
        try:
            with open(self.path, "rb") as fh:
                content = fh.read()
                mtime = os.fstat(fh.fileno()).st_mtime
        except FileNotFoundError:
            return None, None, 0.0
        try:
            return Holder(**json.loads(content)), content, mtime
        except (ValueError, TypeError):
            return None, content, mtime  # empty (O_EXCL fallback mid-write) or foreign content

    def _stale(self, holder: Holder | None, mtime: float) -> bool:
        if holder is not None and holder.on_this_host():
            return not holder.alive()
        return time.time() - mtime > self.stale_after_s

    def _break(self, seen: bytes) -> None:
        aside = self.path.with_name(f"{self.path.name}.{socket.gethostname()}.{os.getpid()}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else broke it first
        try:
            if aside.read_bytes() != seen:  # not the stale lock we judged: a fresh one, put it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                except OSError:
                    if not self.path.exists():
                        os.rename(aside, self.path)
        finally:
            aside.unlink(missing_ok=True)

    def _still_mine(self) -> bool:
        try:
            return self.path.read_bytes() == self._content
        except FileNotFoundError:
            return False

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()

        def beat():
            while not self._stop.wait(self.heartbeat_s):
                if not self._still_mine():
                    self.lost = True
                    return
                try:
                    os.utime(self.path)
                except OSError:
                    pass

        self._beat = threading.Thread(target=beat, name=f"lock-heartbeat {self.path.name}", daemon=True)
        self._beat.start()
