#!/usr/bin/env python3
"""Whether busy guests starve their neighbours: latency of
GET /api/activities/home alone, then while LOOPS calls to a plugin that
loops until its deadline keep every core busy, measured in one run of one
comb (the ratio is the figure; this machine is shared and noisy).

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/neighbours.py [LOOPS]
All traffic is on loopback; the run is bounded (a few seconds a phase).
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMB = os.environ.get("COMB_BIN", os.path.join(ROOT, "target", "release", "comb"))
PLUGINS = {"home_activities": os.path.join(ROOT, "target", "plugins"),
           "misbehave": os.path.join(ROOT, "target", "test-plugins")}
DEADLINE_MS = 2000
PHASE_S = 4.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def serve(folder, env, *flags):
    """Starts comb on `folder` on a free loopback port, with `env` over a
    clean environment (none of the caller's OTEL_, ROLLBAR_ or COMB_
    variables), and waits until it serves; returns the process and port."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ROLLBAR_", "COMB_"))}
    clean.update(RUST_LOG="warn", **env)
    comb = subprocess.Popen(
        [COMB, "serve", "--plugins", folder, "--listen", f"127.0.0.1:{port}", "--no-admin", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean)
    try:
        wait_until_serving(port)
    except BaseException:
        comb.kill()
        raise
    return comb, port


def wait_until_serving(port):
    """Waits (up to 60 s) until comb on `port` serves the home route, then
    warms it up for a second."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if get(port, "/api/activities/home", timeout=2) == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("comb did not start")
        time.sleep(0.1)
    neighbour_latencies(port, 1.0)


def neighbour_latencies(port, seconds):
    """Sequential requests on one keep-alive connection, in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sent = time.perf_counter()
        conn.request("GET", "/api/activities/home")
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        latencies.append((time.perf_counter() - sent) * 1000)
    conn.close()
    return sorted(latencies)


def latencies_while(port, clients, path, status):
    """Neighbour latencies for a phase while `clients` threads loop on
    `path` (each answer must be `status`); also how many calls they made."""
    stop = threading.Event()
    calls = [0]

    def loop():
        while not stop.is_set():
            assert get(port, path) == status
            calls[0] += 1

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    latencies = neighbour_latencies(port, PHASE_S)
    stop.set()
    for thread in threads:
        thread.join()
    return latencies, calls[0]


def quantile(values, q):
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    loops = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    folder = tempfile.mkdtemp(prefix="comb-bench-")
    for name, built in PLUGINS.items():
        shutil.copy(os.path.join(built, f"{name}.wasm"), folder)
    with open(os.path.join(folder, "misbehave.toml"), "w") as sidecar:
        sidecar.write(f"[limits]\ndeadline_ms = {DEADLINE_MS}\n")
    comb, port = serve(folder, {}, "--no-cache")
    try:
        idle = neighbour_latencies(port, PHASE_S)

        busy, _ = latencies_while(port, loops, "/misbehave/loop", 504)
    finally:
        comb.send_signal(signal.SIGTERM)
        comb.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)

    print(f"GET /api/activities/home, sequential, {PHASE_S:.0f} s a phase; "
          f"{os.cpu_count()} cores; release build\n")
    print("| phase | requests | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, values in [("idle", idle), (f"{loops} guests looping", busy)]:
        print(f"| {name} | {len(values)} | {quantile(values, 0.5):.2f} | {quantile(values, 0.99):.2f} |")
    print(f"\nbusy / idle: p50 {quantile(busy, 0.5) / quantile(idle, 0.5):.2f}x, "
          f"p99 {quantile(busy, 0.99) / quantile(idle, 0.99):.2f}x")


if __name__ == "__main__":
    main()
