#!/usr/bin/env python3
"""What comb's limits cost per call: throughput and latency of
home_activities under wrk, with the default engine (pooling allocator,
epoch deadlines, memory limiter, call hooks) against the same with on-demand
allocation (--no-pooling) and with fuel metering on (--fuel).

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/limits.py        (needs wrk: apt-get install wrk)
Variants are interleaved and repeated so the machine's noise shows; all
traffic is on loopback; every run is bounded (a few seconds).
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMB = os.path.join(ROOT, "target", "release", "comb")
PLUGIN = os.path.join(ROOT, "target", "plugins", "home_activities.wasm")
VARIANTS = {
    "default (pooling, epoch, limiter)": [],
    "on-demand allocation": ["--no-pooling"],
    "fuel metering on": ["--fuel", "10000000000"],
}
ROUNDS = 3
DURATION = "5s"
CONNECTIONS = "16"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(folder, flags):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["RUST_LOG"] = "warn"  # no per-request log line: measure comb, not stderr
    comb = subprocess.Popen(
        [COMB, "serve", "--plugins", folder, "--listen", f"127.0.0.1:{port}", "--no-admin", "--no-cache", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/api/activities/home"
    deadline = time.monotonic() + 30
    while subprocess.run(["curl", "-sf", "-o", "/dev/null", url]).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("comb did not start")
        time.sleep(0.1)
    subprocess.run(["wrk", "-t1", "-c4", "-d1s", url], capture_output=True)  # warm up
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}", "--latency", url],
                         capture_output=True, text=True).stdout
    comb.send_signal(signal.SIGTERM)
    comb.wait(timeout=30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert non2xx is None, f"errors under load: {out}"
    return rps, lat["50"], lat["99"]


def main():
    folder = tempfile.mkdtemp(prefix="comb-bench-")
    shutil.copy(PLUGIN, folder)
    try:
        results = {name: [] for name in VARIANTS}
        for _ in range(ROUNDS):
            for name, flags in VARIANTS.items():
                results[name].append(run(folder, flags))
        base = statistics.median(r[0] for r in results["default (pooling, epoch, limiter)"])
        print(f"wrk -t2 -c{CONNECTIONS} -d{DURATION}, GET /api/activities/home, {ROUNDS} interleaved rounds\n")
        print("| engine | req/s (median) | req/s (all rounds) | p50 | p99 | vs default |")
        print("|---|---|---|---|---|---|")
        for name, runs in results.items():
            rps = statistics.median(r[0] for r in runs)
            print(f"| {name} | {rps:.0f} | {', '.join(f'{r[0]:.0f}' for r in runs)} | "
                  f"{runs[len(runs) // 2][1]} | {runs[len(runs) // 2][2]} | {rps / base:.2f} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
