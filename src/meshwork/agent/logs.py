"""Container log files in the CRI format the kubelet reads, and the readers of ``meshwork logs``.

What lives here:

* ``LogWriter``: appends records ``<RFC3339Nano> <stream> <F|P> <content>`` to
  ``<pod_log_dir>/<container>/<restartCount>.log`` and rotates it by size to
  ``<n>.log.1`` (newest) ... ``<n>.log.<max_files-1>`` (oldest), keeping
  ``max_files`` files in all (kubelet's containerLogMaxSize/MaxFiles).
* ``FifoPump``: moves what a container writes to its stdout/stderr FIFO into
  a ``LogWriter``, driven by ``loop.add_reader`` (no thread, no task per
  container).
* ``read_lines`` and ``follow``: the lines of one container instance across
  its rotated files, with ``tail``, ``since`` and ``timestamps`` as in
  ``kubectl logs``.

What must not: which restart is "previous", pods, HTTP (the callers').

Format kept from the CRI (containerd's and CRI-O's writers): one record per
line; tag ``F`` ends a line, ``P`` is a fragment of a longer one. A line
longer than 16 KiB is split into ``P`` records; output that ends without a
newline (the container exited, or the writer was flushed) is written as a
``P`` record. Readers join fragments back into one line, timestamped with its
first fragment. Timestamps always carry nine fraction digits (CRI-O's
layout, which is valid RFC3339Nano).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import fcntl
import functools
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "MAX_LINE",
    "FifoPump",
    "LogWriter",
    "Stream",
    "follow",
    "format_timestamp",
    "log_path",
    "parse_timestamp",
    "read_lines",
]

Stream = Literal["stdout", "stderr"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # kubelet containerLogMaxSize "10Mi"
DEFAULT_MAX_FILES = 5  # kubelet containerLogMaxFiles
MAX_LINE = 16 * 1024  # containerd max_container_log_line_size: longer lines become P records
_READ_CHUNK = 64 * 1024
_PIPE_SIZE = 1024 * 1024  # FIFO buffer asked for, so a burst waits in the kernel, not the app
_FOLLOW_POLL = 0.2


def log_path(pod_log_dir: str | os.PathLike[str], container: str, restart: int) -> Path:
    """``<pod_log_dir>/<container>/<restart>.log``, the kubelet's layout."""
    return Path(pod_log_dir) / container / f"{restart}.log"


# ---------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------


def format_timestamp(now: float) -> str:
    """``2026-11-26T03:21:16.123456789Z`` for a Unix time in seconds."""
    sec = int(now // 1)
    nanos = round((now - sec) * 1e9)
    if nanos >= 1_000_000_000:
        sec, nanos = sec + 1, nanos - 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{nanos:09d}Z"


@functools.lru_cache(maxsize=1024)
def _epoch_seconds(text: str) -> int:
    # Log lines share their second with their neighbours: strptime once per second.
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def parse_timestamp(text: str) -> int:
    """Nanoseconds since the epoch of an RFC3339(Nano) UTC or offset timestamp."""
    main, frac, zone = text, "", "Z"
    if text.endswith("Z"):
        main = text[:-1]
    else:
        cut = max(text.rfind("+"), text.rfind("-"))
        if cut > 10:
            main, zone = text[:cut], text[cut:]
    if "." in main:
        main, frac = main.split(".", 1)
    if not frac.isdigit() and frac:
        raise ValueError(f"bad timestamp {text!r}")
    sec = _epoch_seconds(main)
    if zone != "Z":
        hours, _, minutes = zone[1:].partition(":")
        offset = int(hours) * 3600 + int(minutes or 0) * 60
        sec -= offset if zone[0] == "+" else -offset
    return sec * 1_000_000_000 + int((frac + "000000000")[:9])


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


class LogWriter:
    """Appends CRI records for one container instance and rotates by size.

    ``write`` keeps an unfinished line per stream until its newline arrives,
    it grows past ``MAX_LINE``, or ``flush``/``close``. Each ``write`` call
    ends in one ``os.write``, so a reader never waits on a buffer of ours.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        if max_files < 1:
            raise ValueError("max_files must be at least 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._size = 0
        self._pending: dict[Stream, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, stream: Stream, data: bytes, now: float) -> None:
        """Record what ``stream`` produced at ``now`` (complete lines now, the rest later)."""
        buf = self._pending[stream]
        buf += data
        if b"\n" not in data and len(buf) < MAX_LINE:
            return
        ts = format_timestamp(now).encode()
        full = b"%s %s F " % (ts, stream.encode())
        lines = bytes(buf).split(b"\n")
        rest = lines.pop()
        buf.clear()
        records: list[bytes] = []
        for line in lines:
            if len(line) < MAX_LINE:
                records.append(full + line + b"\n")
                continue
            cut = (len(line) - 1) // MAX_LINE * MAX_LINE  # the last piece is 1..MAX_LINE long
            records += [
                _record(ts, stream, b"P", line[k : k + MAX_LINE]) for k in range(0, cut, MAX_LINE)
            ]
            records.append(full + line[cut:] + b"\n")
        while len(rest) >= MAX_LINE:
            records.append(_record(ts, stream, b"P", rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        buf += rest
        self._emit(records)

    def flush(self, stream: Stream | None = None, now: float | None = None) -> None:
        """Write out an unfinished line (of ``stream``, or both) as a ``P`` record."""
        ts = format_timestamp(time.time() if now is None else now).encode()
        records = []
        for name in ("stdout", "stderr") if stream is None else (stream,):
            buf = self._pending[name]
            if buf:
                records.append(_record(ts, name, b"P", bytes(buf)))
                buf.clear()
        self._emit(records)

    def close(self, now: float | None = None) -> None:
        if self._fd is None:
            return
        self.flush(now=now)
        os.close(self._fd)
        self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def _emit(self, records: list[bytes]) -> None:
        if not records:
            return
        if self._fd is None:
            raise ValueError(f"log writer for {self.path} is closed")
        total = sum(map(len, records))
        if self._size + total <= self.max_bytes:
            self._write_all(b"".join(records))
            return
        batch: list[bytes] = []
        size = 0
        for rec in records:
            if self._size + size > 0 and self._size + size + len(rec) > self.max_bytes:
                self._write_all(b"".join(batch))
                batch, size = [], 0
                self._rotate()
            batch.append(rec)
            size += len(rec)
        self._write_all(b"".join(batch))

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)

    def _rotate(self) -> None:
        """``n.log`` -> ``n.log.1`` -> ... ; the oldest beyond ``max_files`` is removed."""
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        if self.max_files == 1:
            os.unlink(self.path)
        else:
            name = self.path.name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path.with_name(f"{name}.{self.max_files - 1}"))
            for i in range(self.max_files - 2, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path.with_name(f"{name}.{i}"),
                              self.path.with_name(f"{name}.{i + 1}"))  # fmt: skip
            os.rename(self.path, self.path.with_name(f"{name}.1"))
        self._open()


def _record(ts: bytes, stream: str, tag: bytes, content: bytes | bytearray) -> bytes:
    return b"%s %s %s %s\n" % (ts, stream.encode(), tag, bytes(content))


class FifoPump:
    """Reads a container's stdout or stderr FIFO as data arrives and logs it.

    The FIFO is opened ``O_RDWR | O_NONBLOCK``: holding a writer end ourselves
    means it never reports end-of-file, and opening never blocks, whether or
    not the container is running yet.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fifo: str | os.PathLike[str],
        stream: Stream,
        writer: LogWriter,
    ) -> None:
        self.loop = loop
        self.stream: Stream = stream
        self.writer = writer
        self.fd: int | None = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        loop.add_reader(self.fd, self._readable)

    def _read_available(self, limit: int | None) -> None:
        """Read until the FIFO is empty (or ``limit`` bytes, to share the loop)."""
        assert self.fd is not None
        got = 0
        while limit is None or got < limit:
            try:
                data = os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                return
            got += len(data)
            self.writer.write(self.stream, data, time.time())

    def _readable(self) -> None:
        if self.fd is not None and not self.writer.closed:
            self._read_available(4 * _READ_CHUNK)

    def drain_and_close(self) -> None:
        """Log what is still in the FIFO, end an unfinished line with ``P``, stop reading.

        Call it once the container's processes are gone; the LogWriter stays
        open (both streams share it) and the caller closes it.
        """
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        self.loop.remove_reader(fd)
        try:
            if not self.writer.closed:
                self.fd = fd
                self._read_available(None)
                self.writer.flush(self.stream)
        finally:
            self.fd = None
            os.close(fd)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Line:
    ts: bytes
    nanos: int
    content: bytes
    complete: bool

    def render(self, timestamps: bool) -> bytes:
        text = self.content + b"\n" if self.complete else self.content
        return self.ts + b" " + text if timestamps else text


@dataclass(slots=True)
class _Assembler:
    """Turns record lines into log lines, joining ``P`` fragments per stream."""

    partial: dict[bytes, tuple[bytes, bytearray]] = field(default_factory=dict)
    rest: bytes = b""

    def feed(self, data: bytes) -> list[_Line]:
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        out: list[_Line] = []
        for record in data[:cut].split(b"\n")[:-1]:
            parts = record.split(b" ", 3)
            if len(parts) < 3:
                continue  # not a CRI record: skip, as the kubelet's parser does
            ts, stream, tag = parts[0], parts[1], parts[2]
            content = parts[3] if len(parts) == 4 else b""
            started = self.partial.get(stream)
            if tag == b"P":
                if started is None:
                    self.partial[stream] = (ts, bytearray(content))
                else:
                    started[1].extend(content)
                continue
            if started is not None:
                del self.partial[stream]
                ts, content = started[0], bytes(started[1]) + content
            line = _make_line(ts, content, complete=True)
            if line is not None:
                out.append(line)
        return out

    def finish(self) -> list[_Line]:
        """The fragments still open at the end of the log, as unterminated lines."""
        out = []
        for ts, buf in self.partial.values():
            line = _make_line(ts, bytes(buf), complete=False)
            if line is not None:
                out.append(line)
        self.partial.clear()
        return sorted(out, key=lambda line: line.nanos)


def _make_line(ts: bytes, content: bytes, *, complete: bool) -> _Line | None:
    try:
        nanos = parse_timestamp(ts.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    return _Line(ts, nanos, content, complete)


def _files(container_dir: Path, restart: int) -> list[Path]:
    """The instance's files, oldest first: ``n.log.K`` ... ``n.log.1``, ``n.log``."""
    base = f"{restart}.log"
    rotated: list[tuple[int, Path]] = []
    for p in container_dir.glob(base + ".*"):
        suffix = p.name[len(base) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    paths = [p for _, p in sorted(rotated, reverse=True)]
    current = container_dir / base
    if current.exists():
        paths.append(current)
    return paths


def _read(paths: Iterable[Path]) -> bytes:
    chunks = []
    for p in paths:
        with contextlib.suppress(FileNotFoundError):  # rotated away meanwhile
            chunks.append(p.read_bytes())
    return b"".join(chunks)


def _select(lines: list[_Line], tail: int | None, since: float | None) -> list[_Line]:
    if since is not None:
        floor = round(since * 1e9)
        lines = [line for line in lines if line.nanos >= floor]
    if tail is not None and tail >= 0:
        lines = lines[len(lines) - tail :] if tail else []
    return lines


def _history(
    paths: list[Path], tail: int | None, extra: bytes = b""
) -> tuple[list[_Line], _Assembler]:
    """Parse the newest files that hold ``tail`` lines (all of them without a tail).

    With a tail, files are taken newest first until they hold more lines than
    asked for, so a 50 MiB history is not parsed for ``--tail=10``; the one
    extra line covers a line whose first fragments sit in an older file.
    """
    take = len(paths) if tail is None or tail < 0 else 0
    while True:
        asm = _Assembler()
        lines = asm.feed(_read(paths[len(paths) - take :]) + extra)
        if tail is None or tail < 0 or len(lines) > tail or take >= len(paths):
            return lines, asm
        take += 1


def read_lines(
    container_dir: str | os.PathLike[str],
    restart: int,
    *,
    tail: int | None = None,
    since: float | None = None,
    timestamps: bool = False,
) -> list[bytes]:
    """The log lines of one container instance, oldest first, each ending in ``\\n``
    (except a last line the container never finished).

    ``tail``: only the last N lines (``None`` or negative: all); ``since``: only
    lines logged at or after this Unix time; ``timestamps``: prefix each line
    with its RFC3339Nano time and a space (``kubectl logs --timestamps``).
    """
    paths = _files(Path(container_dir), restart)
    lines, asm = _history(paths, None if since is not None else tail)
    lines += asm.finish()
    return [line.render(timestamps) for line in _select(lines, tail, since)]


async def follow(
    container_dir: str | os.PathLike[str],
    restart: int,
    stop: asyncio.Event,
    *,
    tail: int | None = None,
    since: float | None = None,
    timestamps: bool = False,
    poll_interval: float = _FOLLOW_POLL,
) -> AsyncIterator[bytes]:
    """``kubectl logs -f``: the selected existing lines, then each new line as it is
    written, across rotations, until ``stop`` is set (then what is left is read
    and an unfinished last line is yielded as it is)."""
    directory = Path(container_dir)
    current = directory / f"{restart}.log"
    fd: int | None = None
    inode = -1
    while fd is None:
        try:
            fd = os.open(current, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if stop.is_set():
                return
            await _wait(stop, poll_interval)
    try:
        inode = os.fstat(fd).st_ino
        rotated = [p for p in _files(directory, restart) if p != current]
        lines, asm = _initial(rotated, fd, tail, since)
        for line in _select(lines, tail, since):
            yield line.render(timestamps)
        floor = None if since is None else round(since * 1e9)
        while True:
            finished = stop.is_set()
            new = asm.feed(_read_fd(fd))
            try:
                st = os.stat(current)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_ino != inode:
                # Rotated: what was written before the rename is in the file we hold;
                # files rotated after it (several rotations between two polls) come next.
                new += asm.feed(_read_fd(fd))
                os.close(fd)
                new += asm.feed(_read(_rotated_after(directory, restart, inode)))
                fd = os.open(current, os.O_RDONLY | os.O_CLOEXEC)
                inode = os.fstat(fd).st_ino
                new += asm.feed(_read_fd(fd))
            if finished:
                new += asm.finish()
            for line in new:
                if floor is None or line.nanos >= floor:
                    yield line.render(timestamps)
            if finished:
                return
            if not new:
                await _wait(stop, poll_interval)
    finally:
        if fd is not None:
            os.close(fd)


def _initial(
    rotated: list[Path], fd: int, tail: int | None, since: float | None
) -> tuple[list[_Line], _Assembler]:
    """The history before following: rotated files, then the open file to its end."""
    held = _read_fd(fd)
    if since is not None or tail is None or tail < 0:
        return _history(rotated, None, extra=held)
    return _history(rotated, tail, extra=held)


def _rotated_after(directory: Path, restart: int, inode: int) -> list[Path]:
    """Rotated files newer than the one with ``inode``, oldest first (none if it is gone)."""
    rotated = [p for p in _files(directory, restart) if p.name != f"{restart}.log"]
    for i, p in enumerate(rotated):
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_ino == inode:
                return rotated[i + 1 :]
    return []


def _read_fd(fd: int) -> bytes:
    chunks = []
    while data := os.read(fd, _READ_CHUNK):
        chunks.append(data)
    return b"".join(chunks)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
