"""What `make bench`, `make soak` and `make overload` share: servers, seeding, gunicorn, wrk.

Everything runs on this machine: SecantusDB and redis-server on free ports in a temporary
directory, the service under gunicorn with its production configuration, and wrk.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from service.seed import seed_id
from tests.helpers.sentinel import SentinelGroup
from tests.helpers.servers import MongoServer, RedisServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
USERS, ORDERS_PER_USER, HOT_SET = 10_000, 5, 100
TOKEN = "bench-write-token-0123456789"  # noqa: S105 - a throwaway token for a local run


@dataclass(frozen=True)
class Stack:
    """The running servers, the seeded ids (one per line) and a log for everything."""

    mongo: MongoServer
    redis: RedisServer
    ids_file: Path
    log: Path
    sentinel_url: str = ""  # with `sentinel`: REDIS_URL through the sentinels, same primary


@contextlib.contextmanager
def stack(prefix: str, sentinel: bool = False) -> Iterator[Stack]:
    """SecantusDB and redis-server on free ports, seeded with USERS x ORDERS_PER_USER; with
    `sentinel`, that redis-server is the primary of a replica and three sentinels."""
    with tempfile.TemporaryDirectory(prefix=prefix) as temp:
        directory = Path(temp)
        mongo, redis = MongoServer(directory / "mongo"), RedisServer(directory / "redis")
        group = SentinelGroup(directory / "sentinel") if sentinel else None
        if group is not None:
            redis = group.primary
            group.start()
        mongo.start()
        if group is None:
            redis.start()
        log = directory / "servers.log"
        try:
            env = {**os.environ, "SERVICE_ENV": "test", "MONGO_URL": mongo.url, "MONGO_DB": "bench"}
            seed = [sys.executable, "-m", "service", "seed", "--users", str(USERS)]
            seed += ["--orders-per-user", str(ORDERS_PER_USER)]
            subprocess.run(seed, env=env, check=True, cwd=ROOT)
            ids_file = directory / "ids.txt"
            ids_file.write_text("\n".join(seed_id("user", i) for i in range(USERS)) + "\n")
            yield Stack(mongo, redis, ids_file, log, "" if group is None else group.url)
        finally:
            if group is not None:
                group.stop()
            redis.stop()
            mongo.stop()
            _keep_server_log(log, RESULTS / f"{prefix.removeprefix('user-service-')}servers.log")


def _keep_server_log(log: Path, kept: Path) -> None:
    """The services' log without its 2xx-4xx access lines: what a run's errors were."""
    if not log.exists():
        return
    quiet = re.compile(r'"logger":"service\.access".*"status":[234]\d\d')
    with log.open(errors="replace") as lines:
        text = "".join(line for line in lines if not quiet.search(line))
    RESULTS.mkdir(exist_ok=True)
    kept.write_text(text)


def service_env(stack: Stack, cache: str, port: int, workers: int) -> dict[str, str]:
    """The production configuration (JSON access logs, tokens, Redis), on local servers."""
    env = {
        **os.environ,
        "SERVICE_ENV": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "MONGO_URL": stack.mongo.url,
        "MONGO_DB": "bench",
        "REDIS_URL": stack.sentinel_url if cache == "sentinel" else stack.redis.url,
        "CACHE_BACKEND": "redis" if cache == "sentinel" else cache,
        "API_TOKENS": TOKEN,
        "CURSOR_SECRET": "the-benchmark-cursor-secret",
        "SHUTDOWN_DRAIN_SECONDS": "0",
        "METRICS_PORT": str(free_port()),  # production serves /metrics on its own port
    }
    if cache == "memory" and workers > 1:
        env["CACHE_MEMORY_ACROSS_WORKERS"] = "true"  # reads only: no staleness to accept
    return env


def start_gunicorn(
    command: list[str], env: dict[str, str], port: int, log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start gunicorn and wait until the app (not just the socket) answers a user read."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, timeout=60, process=process)
    url = f"http://127.0.0.1:{port}/users/{seed_id('user', 0)}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    return process


def start_service(
    stack: Stack, cache: str, workers: int, tree: Path | None = None, **extra: str
) -> tuple[int, subprocess.Popen[bytes]]:
    """The service under gunicorn: this tree's, or `tree`'s (another checkout, such as a
    `git worktree` of an earlier commit) with that tree's own venv and working directory."""
    port = free_port()
    env = {**service_env(stack, cache, port, workers), **extra}
    if tree is not None:
        env.pop("PYTHONPATH", None)  # that tree's modules, not this one's
    gunicorn = BIN / "gunicorn" if tree is None else tree / ".venv" / "bin" / "gunicorn"
    command = [str(gunicorn), "--config", "gunicorn.conf.py"]
    return port, start_gunicorn(command, env, port, stack.log, cwd=tree or ROOT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (from /proc/<pid>/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            # Fields after the command's closing parenthesis; utime and stime are 14 and 15.
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def memory_mb(pids: list[int], field: str = "VmHWM") -> float:
    """The largest of the workers' VmHWM (peak RSS) or VmRSS (current), in MB."""
    values = []
    for pid in pids:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
            if match:
                values.append(int(match.group(1)) / 1024)
    return max(values, default=0.0)


def wrk(
    port: int,
    seconds: float,
    ids_file: Path,
    *,
    connections: int = 50,
    hot: int = 0,
    hot_from: int = 0,
    write_percent: int = 0,
    statuses: bool = False,
) -> dict[str, float]:
    """One wrk run through bench/lua/scenario.lua: requests/s, p50/p99 (ms) and errors.

    `hot`: only that many ids, after the first `hot_from` (0: every id).

    With `statuses`, also how many answers came back with each non-2xx status
    (`status_503`...), at some cost to wrk's own speed.
    """
    env = {
        **os.environ,
        "BENCH_LUA_DIR": str(BENCH / "lua"),
        "BENCH_IDS": str(ids_file),
        "BENCH_HOT": str(hot),
        "BENCH_HOT_FROM": str(hot_from),
        "BENCH_WRITE_PERCENT": str(write_percent),
        "BENCH_TOKEN": TOKEN,
        "BENCH_STATUSES": "1" if statuses else "0",
    }
    command = ["wrk", "--threads", "2", "--connections", str(connections)]
    command += ["--duration", f"{max(1, round(seconds))}s", "--timeout", "5s"]
    command += ["--script", str(BENCH / "lua" / "scenario.lua"), f"http://127.0.0.1:{port}"]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    result = {
        "requests": data["requests"],
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "errors": sum(data["errors"].values()),
    }
    # Which kind: connect, read, write, status (a non-2xx/3xx answer), timeout (5 s).
    result.update({f"errors_{kind}": count for kind, count in data["errors"].items()})
    result.update({f"status_{code}": n for code, n in data["statuses"].items() if code[0] != "2"})
    return result


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} x {model}, Python {platform.python_version()}, {platform.system()}"


def publish(name: str, data: object, text: str, *, readme: bool) -> Path:
    """Write `data` to bench/results/<name>.json, print `text`, and with `readme` put it
    between README.md's `<!-- <name>:start -->` and `<!-- <name>:end -->` markers."""
    path = RESULTS / f"{name}.json"
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    print(text)
    if readme:
        update_readme(name, text)
    return path


def update_readme(marker: str, text: str) -> None:
    """Replace what sits between `<!-- {marker}:start -->` and `<!-- {marker}:end -->`."""
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in content or end not in content:
        raise SystemExit(f"README.md has no {start} ... {end} section to update")
    before, _, rest = content.partition(start)
    _, _, after = rest.partition(end)
    readme.write_text(f"{before}{start}\n{text}\n{end}{after}")
