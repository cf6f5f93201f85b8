"""Job submissions per second against ONE ``python -m api`` process, with p50/p99 latency.

What it runs: a private Valkey server on a free loopback port, one uvicorn process (``python -m
api``, uvloop + httptools) pinned to CPU 0 with ``taskset``, and, in this process pinned to CPU 1, a
closed-loop load generator: N keep-alive connections, each sending ``POST /v1/jobs`` and waiting for
the answer before sending the next (raw asyncio sockets, no HTTP client library in the way, so the
generator is not the bottleneck). Bounded in time and count; a warm-up is excluded from the numbers.
Afterwards it checks that Redis counted exactly as many arrivals as the API answered 202.

    .venv/bin/python benchmarks/api_submit.py                    # 16 / 32 / 64 connections, 10 s each
    .venv/bin/python benchmarks/api_submit.py --connections 32 --seconds 20
    .venv/bin/python benchmarks/api_submit.py --rate-limit 1000000/s --cache-ttl 60   # full pipeline

Target (issue 3): >= 2,000 submissions/s per core with p99 < 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without install

import redis  # noqa: E402

from jobqueue import Keyspace  # noqa: E402
from tests.support.valkey import ValkeyServer, free_port  # noqa: E402

QUEUE = "bench:v1"
COLUMNS: tuple[str, ...] = ("connections", "rate_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms")
COLUMNS += ("api_cpu_us_per_req", "per_core_capacity", "statuses")
TARGET_RATE = 2000.0
TARGET_P99_MS = 25.0


@dataclass
class Run:
    connections: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, after warm-up
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    def record(self, status: int, latency: float | None) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if latency is not None:
            self.latencies.append(latency)

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else float("nan")

        return {
            "connections": self.connections,
            "seconds": round(self.elapsed, 2),
            "requests": len(lat),
            "rate_per_s": round(len(lat) / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 2) if lat else float("nan"),
            "statuses": dict(sorted(self.statuses.items())),
        }


def request_bytes(n: int, api_key: str | None) -> bytes:
    body = json.dumps({"input": {"n": n, "image": "s3://bucket/cat.jpg"}, "model": "bench"}).encode()
    key = f"X-API-Key: {api_key}\r\n" if api_key else ""
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{key}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def connection(port: int, run: Run, warm_until: float, stop_at: float, api_key: str | None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    n = 0
    try:
        while (now := time.perf_counter()) < stop_at:
            writer.write(request_bytes(n, api_key))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            n += 1
            run.record(status, time.perf_counter() - now if now >= warm_until else None)
    finally:
        writer.close()


async def load(port: int, connections: int, seconds: float, warmup: float, api_key: str | None) -> Run:
    run = Run(connections, seconds)
    start = time.perf_counter()
    warm_until, stop_at = start + warmup, start + warmup + seconds
    await asyncio.gather(*(connection(port, run, warm_until, stop_at, api_key) for _ in range(connections)))
    run.elapsed = time.perf_counter() - warm_until
    return run


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(cpu: int) -> list[str]:
    """``taskset -c cpu`` if there is more than one CPU to pin to, else nothing."""
    if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def start_api(redis_url: str, port: int, env_extra: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "METRICS_PORT": str(port),  # no second listener at the default 9464 to collide with
        "HOST": "127.0.0.1",
        "MODEL_REF": QUEUE,
        "LOG_LEVEL": "WARNING",
        **env_extra,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*pin(0), sys.executable, "-m", "api"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"api did not become ready:\n{log.read_text()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured time per run (max 120)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rate-limit", default="", help="RATE_LIMIT for the API (default off)")
    ap.add_argument("--cache-ttl", default="0", help="RESULT_CACHE_TTL for the API (default off)")
    ap.add_argument("--api-key", default="", help="send this X-API-Key (and enable API_KEYS with it)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = ap.parse_args()
    seconds = min(args.seconds, 120.0)

    env = {"RATE_LIMIT": args.rate_limit, "RESULT_CACHE_TTL": args.cache_ttl, "MAX_WAITING": "0"}
    if args.api_key:
        env["API_KEYS"] = f"{args.api_key}=*"
    gen_pin = pin(1)
    if gen_pin:
        os.sched_setaffinity(0, {1})
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop

    with TemporaryDirectory() as tmp:
        server = ValkeyServer(Path(tmp) / "valkey")
        server.start()
        port = free_port()
        api = start_api(server.url, port, env, Path(tmp) / "api.log")
        client = redis.Redis.from_url(server.url)
        results = []
        try:
            for conns in args.connections:
                client.flushall()
                cpu_before = cpu_seconds(api.pid)
                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    run = runner.run(load(port, conns, seconds, args.warmup, args.api_key or None))
                api_cpu = cpu_seconds(api.pid) - cpu_before
                summary = run.summary()
                total = sum(run.statuses.values())
                summary["api_cpu_s"] = round(api_cpu, 2)
                summary["api_cpu_us_per_req"] = round(api_cpu / total * 1e6, 1) if total else None
                summary["per_core_capacity"] = round(total / api_cpu) if api_cpu else None
                arrivals = int(client.get(Keyspace().queue(QUEUE).arrivals) or 0)
                accepted = sum(v for k, v in run.statuses.items() if k == 202)
                summary["accepted_total"] = accepted
                summary["arrivals_in_redis"] = arrivals
                results.append(summary)
        finally:
            api.terminate()
            api.wait(10)
            client.close()
            server.stop()

    conditions = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "server_pinned": bool(pin(0)),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "env": env,
    }
    if args.json:
        print(json.dumps({"conditions": conditions, "runs": results}, indent=2))
    else:
        print(f"conditions: {json.dumps(conditions)}")
        print(
            "| conns | req/s | p50 ms | p90 ms | p99 ms | max ms | API CPU µs/req | req per API CPU-s "
            "| statuses | 202s = arrivals |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|:---|:---|")
        for r in results:
            check = "ok" if r["accepted_total"] == r["arrivals_in_redis"] else "MISMATCH"  # incl. warm-up
            cells = [r[k] for k in COLUMNS]
            print("| " + " | ".join(map(str, cells)) + f" | {r['arrivals_in_redis']} ({check}) |")
    ok = any(
        float(str(r["rate_per_s"])) >= TARGET_RATE and float(str(r["p99_ms"])) < TARGET_P99_MS
        for r in results
    )
    print(f"target >= {TARGET_RATE:.0f}/s with p99 < {TARGET_P99_MS} ms: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
