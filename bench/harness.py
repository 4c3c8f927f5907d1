"""Processes, load and measurements for bench/run.py: nothing here knows what is being compared.

Every process is started in a session of its own, pinned with taskset, and stopped by its process group id.
wrk runs for a bounded time; while it runs, the system under test's RSS is sampled from /proc.
"""

import hashlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

STOP_GRACE_SECONDS = 5.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def get_scope(path: str, headers: Sequence[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    """A GET's ASGI scope as a server gives it, for calling an app in-process. Fresh each call: layers write
    into the scope (state, route), as they would per request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
    }


async def cpu_per_request(app: Any, scope: Callable[[], dict[str, Any]], count: int, *, warm: int = 200) -> float:
    """CPU seconds this process spends per request of `app` called in-process, one request at a time, after
    `warm` requests (pools, caches); every answer must be a 200."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(warm):
        await app(scope(), receive, send)
    statuses.clear()
    started = time.process_time()
    for _ in range(count):
        await app(scope(), receive, send)
    spent = time.process_time() - started
    assert set(statuses) == {200}, set(statuses)
    return spent / count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """The processes of one run, stopped in reverse order of start (also on errors and Ctrl-C)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int,
        cwd: Path,
        env: Mapping[str, str],
        discard_stdout: bool = False,
    ) -> int:
        """Start `argv` on `cpu` with exactly `env`; stderr (and stdout unless discarded) go to the log dir."""
        log_name = re.sub(r"[^\w.-]+", "-", name).strip("-") + ".log"
        with (self.log_dir / log_name).open("wb") as log:
            process = subprocess.Popen(
                ["taskset", "-c", str(cpu), *argv],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if discard_stdout else log,
                stderr=log,
                env=dict(env),
                start_new_session=True,  # its own process group: stopping it reaches the workers it forks
            )
        self._started.append(process)
        return process.pid

    def stop(self, pid: int) -> None:
        """Stop one process (and its group) before the others, e.g. so it flushes what it holds."""
        for process in [process for process in self._started if process.pid == pid]:
            _stop_group(process)
            self._started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self._started):
            _stop_group(process)
        self._started.clear()

    def alive(self, pid: int) -> bool:
        return any(process.pid == pid and process.poll() is None for process in self._started)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, STOP_GRACE_SECONDS)):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; workers of its group may still be exiting.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return


@contextmanager
def processes(log_dir: Path) -> Iterator[Processes]:
    """Processes that are stopped when the block ends, however it ends (SIGTERM included)."""
    group = Processes(log_dir)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield group
    finally:
        group.stop_all()
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def wait_ready(url: str, *, alive: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200; fail early when the process serving it has died."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for {url} exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"status {response.status}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s: {last_error}")


# memory ----------------------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (granian serves from worker processes it forks)."""
    tree = [pid]
    for member in tree:
        for task in Path(f"/proc/{member}/task").glob("*"):
            try:
                tree.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far (all their threads)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields after it do not
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return ticks / _CLOCK_TICKS


def rss_bytes(pids: Sequence[int]) -> list[int]:
    """The resident set size of each process still running."""
    sizes = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            sizes.append(int(match.group(1)) * 1024)
    return sizes


# load ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    peak_rss_bytes: int = 0  # the whole process tree of the system under test
    peak_process_rss_bytes: int = 0  # its largest process (granian: the worker that serves)
    cpu_seconds: float = 0.0  # used by the system under test during the run

    @property
    def cpu_us_per_request(self) -> float:
        """The figure neighbours on a shared machine disturb least: they take CPU time, not cost per request."""
        return 1e6 * self.cpu_seconds / self.requests if self.requests else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    headers: Sequence[tuple[str, str]],
    cpu: int,
    sample_pid: int | None = None,
) -> Load:
    """One wrk run of `seconds`, bounded even if wrk hangs; the RSS of `sample_pid`'s tree is sampled meanwhile
    and its CPU time measured."""
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers:
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    peak_tree = peak_process = 0
    cpu_before = cpu_seconds(process_tree(sample_pid)) if sample_pid is not None else 0.0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True) as wrk:
        deadline = time.monotonic() + seconds + 15
        try:
            while wrk.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"wrk on {url} did not stop by itself")
                if sample_pid is not None:
                    sizes = rss_bytes(process_tree(sample_pid))
                    peak_tree, peak_process = max(peak_tree, sum(sizes)), max(peak_process, *sizes, 0)
                time.sleep(0.25)
        finally:
            if wrk.poll() is None:
                os.killpg(wrk.pid, signal.SIGKILL)
        assert wrk.stdout is not None
        output = wrk.stdout.read().decode()
    cpu_used = cpu_seconds(process_tree(sample_pid)) - cpu_before if sample_pid is not None else 0.0
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed on {url}:\n{output}")
    load = parse_wrk(output)
    return replace(load, peak_rss_bytes=peak_tree, peak_process_rss_bytes=peak_process, cpu_seconds=cpu_used)


def parse_wrk(output: str) -> Load:
    """What wrk --latency printed; the sampled fields stay zero."""

    def latency(percentile: str) -> float:
        match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {percentile}% latency in wrk's output:\n{output}")
        return float(match.group(1)) * _UNITS_MS[match.group(2)]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if rate is None or total is None:
        raise ValueError(f"no request rate in wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if sockets:
        socket_errors = dict(zip(socket_errors, (int(value) for value in sockets.groups()), strict=True))
    return Load(
        requests_per_second=float(rate.group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(total.group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


# upstream connections and requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OriginCounters:
    """nginx's stub_status counters; the query reading them is itself one accepted connection and one request."""

    accepts: int
    requests: int

    def since(self, before: "OriginCounters") -> "OriginCounters":
        """What happened between two readings, less the later reading's own connection and request."""
        return OriginCounters(self.accepts - before.accepts - 1, self.requests - before.requests - 1)


def nginx_counters(status_url: str) -> OriginCounters:
    with urllib.request.urlopen(status_url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"server accepts handled requests\s+(\d+)\s+\d+\s+(\d+)", text)
    if match is None:
        raise ValueError(f"unexpected stub_status answer: {text!r}")
    return OriginCounters(int(match.group(1)), int(match.group(2)))


# one large download ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Download:
    status: int
    size: int
    sha256: str
    seconds: float
    rss_before_bytes: int  # the serving process tree just before the request
    peak_rss_bytes: int  # and its peak while the body moved

    @property
    def rss_growth_bytes(self) -> int:
        return self.peak_rss_bytes - self.rss_before_bytes


def download(url: str, *, sample_pid: int, bytes_per_second: float | None = None) -> Download:
    """GET `url` and read the body in 64 KiB pieces (no faster than `bytes_per_second` when given, so a server
    that ignores back-pressure would have to hold what the reader has not taken), sampling the RSS of
    `sample_pid`'s tree every 10 ms meanwhile."""
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(rss_bytes(process_tree(sample_pid))))
            done.wait(0.01)

    before = sum(rss_bytes(process_tree(sample_pid)))
    sampler = threading.Thread(target=sample, daemon=True)
    digest = hashlib.sha256()
    size = 0
    started = time.monotonic()
    sampler.start()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status = response.status
            while chunk := response.read(65536):
                digest.update(chunk)
                size += len(chunk)
                if bytes_per_second is not None:
                    ahead = size / bytes_per_second - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the reader, not waiting for a state
    finally:
        done.set()
        sampler.join()
    seconds = time.monotonic() - started
    return Download(status, size, digest.hexdigest(), seconds, before, max(peak, before))
