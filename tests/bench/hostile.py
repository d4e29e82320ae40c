#!/usr/bin/env python3
"""What a hostile component and a big plugin file cost comb's neighbours.

1. hoard: 64 calls at once to a standard wasi:http component that creates
   header fields (a kilobyte each) until its call fails; comb's RSS idle,
   at its peak, and after each of three waves.
2. copy-in: a neighbour route's latency (sequential GETs of home) while a
   20 MB plugin (the Python one) is copied into the folder under a new
   name every 1.5 s (each is read, hashed and compiled), against the same
   with no copies, as p50 / p99 / max and their ratio.

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/hostile.py [COMB_BINARY ...]
Each binary given (default target/release/comb) is measured in the same
run, one after the other, so two builds compare on the same machine state.
All traffic is on loopback; every phase is bounded (seconds).
"""

import concurrent.futures
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILT = os.path.join(ROOT, "target", "plugins")
TEST_BUILT = os.path.join(ROOT, "target", "test-plugins")


def plugin(name):
    for folder in (BUILT, TEST_BUILT):
        path = os.path.join(folder, name + ".wasm")
        if os.path.exists(path):
            return path
    sys.exit(f"{name}.wasm not built: run cargo xtask plugins (and cargo xtask test once)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(binary, plugins, cache):
    folder = tempfile.mkdtemp(prefix="comb-hostile-")
    for name in plugins:
        shutil.copy(plugin(name), os.path.join(folder, name + ".wasm"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COMB_"))}
    env["RUST_LOG"] = "warn"
    comb = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--no-admin",
         "--plugins", folder, "--cache-dir", cache],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/no-such-route", timeout=1):
                pass
        except urllib.error.HTTPError as error:
            if error.code == 404:
                break
        except OSError:
            pass
        time.sleep(0.1)
    return comb, url, folder


def stop(comb, folder):
    comb.send_signal(signal.SIGTERM)
    try:
        comb.wait(timeout=20)
    except subprocess.TimeoutExpired:
        comb.kill()
    shutil.rmtree(folder, ignore_errors=True)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code


def hoard(binary, cache):
    comb, url, folder = start(binary, ["proxy_hello"], cache)
    try:
        idle = rss_kib(comb.pid)
        peak, after = idle, []
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            for _ in range(3):
                calls = [pool.submit(get, url + "/proxy_hello/hoard") for _ in range(64)]
                while not all(call.done() for call in calls):
                    peak = max(peak, rss_kib(comb.pid))
                    time.sleep(0.02)
                statuses = sorted({call.result() for call in calls})
                after.append(rss_kib(comb.pid))
        print(f"  hoard, 64 calls at once x3: answers {statuses}; RSS idle {idle // 1024} MiB, "
              f"peak {peak // 1024} MiB, after each wave {[a // 1024 for a in after]} MiB")
    finally:
        stop(comb, folder)


def neighbour_latencies(url, seconds):
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        get(url + "/api/activities/home")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def summary(latencies):
    latencies = sorted(latencies)
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return p50, p99, latencies[-1]


def copy_in(binary, cache):
    # The big plugin is in the folder from the start, so comb has compiled
    # it into the cache before anything is measured: each copy is then
    # read, hashed and loaded from the cache, not compiled again.
    comb, url, folder = start(binary, ["home_activities", "home_activities_py"], cache)
    try:
        neighbour_latencies(url, 1)  # warm
        quiet = summary(neighbour_latencies(url, 6))
        stop_copies = threading.Event()

        def copies():
            n = 0
            while not stop_copies.is_set():
                shutil.copy(plugin("home_activities_py"), os.path.join(folder, f"big{n}.wasm"))
                n += 1
                stop_copies.wait(1.5)

        copier = threading.Thread(target=copies)
        copier.start()
        busy = summary(neighbour_latencies(url, 6))
        stop_copies.set()
        copier.join()
        print(f"  copy-in, neighbour p50/p99/max ms: quiet {quiet[0]:.2f}/{quiet[1]:.2f}/{quiet[2]:.1f}, "
              f"copying {busy[0]:.2f}/{busy[1]:.2f}/{busy[2]:.1f}; p99 ratio {busy[1] / quiet[1]:.2f}")
    finally:
        stop(comb, folder)


def main():
    binaries = sys.argv[1:] or [os.path.join(ROOT, "target", "release", "comb")]
    cache = tempfile.mkdtemp(prefix="comb-hostile-cache-")
    try:
        for binary in binaries:
            print(binary)
            hoard(binary, cache)
            copy_in(binary, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
