"""Processes and ports of the nodes: pid files, /proc, signals and sockets (Linux)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from taxi_kafka.cluster._config import HOST

_TCP_LISTEN = "0A"

# Nodes started by this process. Their Popen objects reap them when they exit, so a dead child
# never lingers as a zombie that still looks alive.
_children: dict[int, subprocess.Popen[bytes]] = {}


def is_kafka_node(argv: Sequence[str], properties: Path) -> bool:
    """Whether a command line is a Kafka broker started on this `properties` file."""
    return (
        bool(argv)
        and Path(argv[0]).name.startswith("java")
        and "kafka.Kafka" in argv
        and str(properties) in argv
    )


def find_kafka_node(properties: Path) -> int | None:
    """The pid of a running Kafka broker started on `properties`, found by its command line."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        pid = int(cmdline.parent.name)
        argv = read_cmdline(pid)
        if argv and is_kafka_node(argv, properties) and pid_alive(pid):
            return pid
    return None


def read_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def start_detached(
    argv: Sequence[str], cwd: Path, output: Path, preexec: Callable[[], None] | None = None
) -> int:
    """Start `argv` in its own session (so Ctrl+C at the terminal does not reach it), with
    stdout and stderr appended to `output`; `preexec` runs in the child first (say, to enter
    a test host's network). Returns its pid."""
    with output.open("ab") as out:
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509  # only setns(2): nothing a fork could deadlock on
        )
    _children[child.pid] = child
    return child.pid


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until the processes have exited; returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def send_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone: nothing to signal
        os.kill(pid, sig)


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could bind the port. SO_REUSEADDR as Kafka's own sockets use it, so
    connections lingering in TIME_WAIT after a stop do not count as 'in use'."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        return probe.connect_ex((host, port)) == 0


def listening_inodes(proc_net_tcp: str, port: int) -> set[int]:
    """Socket inodes listening on `port`, from the text of /proc/net/tcp or /proc/net/tcp6."""
    inodes = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == _TCP_LISTEN:
            inodes.add(int(fields[9]))
    return inodes


def port_owner(port: int) -> str | None:
    """'pid N (command line)' of the process listening on `port`, when /proc lets us see it."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            inodes |= listening_inodes(Path(table).read_text(), port)
    targets = {f"socket:[{inode}]" for inode in inodes}
    if not targets:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        pid = int(fd_dir.parent.name)
                        command = " ".join(read_cmdline(pid) or ["?"])
                        return f"pid {pid} ({_shorten(command)})"
    return None


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
