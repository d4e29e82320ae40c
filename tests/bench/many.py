#!/usr/bin/env python3
"""Cost as the number of loaded plugins grows: N copies of the WASI 0.2
test component (`proxy_hello`, each routed by its file name:
/hello_0007/...) for each N given (default 10 100 1000), one release comb
per N on a warm compile cache:

- time from start to the first load done (/readyz), and per plugin;
- comb's RSS once loaded and idle, and per plugin;
- CPU per request and p50 on one route (sequential);
- the time to swap one plugin (its twin `service_hello` copied over it)
  until the new build serves.

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/many.py [N ...]
All traffic is on loopback; the run is bounded (300 requests and one swap
per N).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from neighbours import COMB, ROOT, free_port, get
from languages import cpu_seconds, quantile, status_kib

COMPONENT = os.path.join(ROOT, "target", "test-plugins", "proxy_hello.wasm")
TWIN = os.path.join(ROOT, "target", "test-plugins", "service_hello.wasm")
REQUESTS = 300


def wait(what, check, seconds=600):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def digest_of(admin, file):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/_comb/plugins", timeout=5) as response:
        for report in json.load(response):
            if report["file"] == file and report["plugin"]:
                return report["plugin"]["digest"]
    return None


def measure(n, scratch, cache):
    folder = os.path.join(scratch, f"n{n}")
    os.makedirs(folder)
    for i in range(n):
        shutil.copy(COMPONENT, os.path.join(folder, f"hello_{i:04}.wasm"))
    port, admin, health = free_port(), free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ROLLBAR_", "COMB_"))}
    clean.update(RUST_LOG="warn", OTEL_SDK_DISABLED="true")
    started = time.perf_counter()
    comb = subprocess.Popen(
        [COMB, "serve", "--plugins", folder, "--cache-dir", cache,
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
         "--health-listen", f"127.0.0.1:{health}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean)
    try:
        wait("the first load", lambda: ready(health))
        loaded = time.perf_counter() - started
        route = f"/hello_{n // 2:04}/x"
        assert get(port, route) == 201
        time.sleep(1.0)
        rss = status_kib(comb.pid, "VmRSS")
        # The peak: the first load's, unless serving grew past it.
        peak = status_kib(comb.pid, "VmHWM")
        before = cpu_seconds(comb.pid)
        latencies = []
        for _ in range(REQUESTS):
            t = time.perf_counter()
            assert get(port, route) == 201
            latencies.append(time.perf_counter() - t)
        cpu = (cpu_seconds(comb.pid) - before) / REQUESTS
        # The swap: the twin's bytes over one file, until it serves.
        swapped = "hello_0000.wasm"
        old = digest_of(admin, swapped)
        staging = os.path.join(folder, ".swap.tmp")
        shutil.copy(TWIN, staging)
        t = time.perf_counter()
        os.rename(staging, os.path.join(folder, swapped))
        wait("the swap", lambda: digest_of(admin, swapped) not in (None, old), 120)
        swap = time.perf_counter() - t
    finally:
        comb.terminate()
        comb.wait()
    return loaded, rss, peak, cpu, quantile(latencies, 0.5), swap


def main():
    counts = [int(a) for a in sys.argv[1:]] or [10, 100, 1000]
    scratch = tempfile.mkdtemp(prefix="comb-bench-many-")
    cache = os.path.join(scratch, "cache")
    try:
        # A warm compile cache: both components compiled once.
        warmup = os.path.join(scratch, "warmup")
        os.makedirs(warmup)
        shutil.copy(COMPONENT, warmup)
        shutil.copy(TWIN, warmup)
        subprocess.run([COMB, "plugins", "--cache-dir", cache, "--plugins", warmup],
                       stdout=subprocess.DEVNULL, check=True)
        print(f"{'plugins':>8} {'first load s':>13} {'ms/plugin':>10} {'RSS MiB':>8} "
              f"{'peak MiB':>9} {'KiB/plugin':>11} {'CPU us/req':>11} {'p50 ms':>7} {'swap ms':>8}")
        first = None
        for n in counts:
            loaded, rss, peak, cpu, p50, swap = measure(n, scratch, cache)
            first = first or (n, rss, cpu)
            per_plugin = (rss - first[1]) / (n - first[0]) if n > first[0] else float("nan")
            print(f"{n:>8} {loaded:>13.2f} {loaded / n * 1000:>10.2f} {rss / 1024:>8.0f} "
                  f"{peak / 1024:>9.0f} {per_plugin:>11.0f} {cpu * 1e6:>11.0f} {p50 * 1000:>7.2f} {swap * 1000:>8.0f}")
        print(f"(KiB/plugin: RSS growth over the first row's, per plugin more; tracing off; "
              f"CPU from /proc, 10 ms ticks; the swap includes the folder's settle time)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
