#!/usr/bin/env python3
"""Plugin lifecycle benchmark: how fast comb picks plugins up.

Measures, with the release binary, in one run on this machine:
  1. the time from a plugin file landing in the folder to its route serving
     (median and max of several landings);
  2. start-up to serving with 20 plugins, cold (empty compile cache) versus
     warm (cache filled by the cold run), and the ratio;
  3. idle RSS with those 20 plugins loaded.

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/lifecycle.py
Everything runs on loopback and stops by itself.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
import urllib.error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMB = os.path.join(ROOT, "target", "release", "comb")
PLUGINS = os.path.join(ROOT, "target", "plugins")
TEST_PLUGINS = os.path.join(ROOT, "target", "test-plugins")
LANDINGS = 10
STARTS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def start(folder, cache):
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        [COMB, "serve", "--plugins", folder, "--listen", f"127.0.0.1:{port}",
         "--no-admin", "--cache-dir", cache],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    for line in process.stderr:
        if "listening on" in line:
            elapsed = time.monotonic() - started
            # Keep draining the log, or comb blocks once the pipe is full.
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, port, elapsed
    raise RuntimeError("comb did not start")


def stop(process):
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def wait_until(predicate, limit=30.0):
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.005)


def custom_section(name, payload):
    """A wasm custom section: valid at the top level of a component, so a
    copy with one is a different file (another digest, another cache key)
    that behaves the same."""
    def leb(n):
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    body = leb(len(name)) + name.encode() + payload
    return b"\x00" + leb(len(body)) + body


def twenty_plugins(folder):
    """20 distinct plugin files: the ten Cruddur plugins, twice, each copy
    with its own custom section and its own route (a sidecar)."""
    names = sorted(f[:-5] for f in os.listdir(PLUGINS) if f.endswith(".wasm"))
    for copy in range(2):
        for name in names:
            stem = f"{name}_{copy}"
            with open(os.path.join(PLUGINS, name + ".wasm"), "rb") as f:
                wasm = f.read() + custom_section("comb-bench", stem.encode())
            with open(os.path.join(folder, stem + ".wasm"), "wb") as f:
                f.write(wasm)
            with open(os.path.join(folder, stem + ".toml"), "w") as f:
                f.write(f'routes = [{{ method = "GET", pattern = "/bench/{stem}" }}]\n')
    return [f"{n}_{c}" for c in range(2) for n in names]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    work = tempfile.mkdtemp(prefix="comb-bench-")
    try:
        # 1. landing to serving
        folder = os.path.join(work, "landing")
        os.mkdir(folder)
        shutil.copy(os.path.join(PLUGINS, "home_activities.wasm"), folder)
        process, port, _ = start(folder, os.path.join(work, "cache-landing"))
        source = os.path.join(TEST_PLUGINS, "faulty.wasm")
        landings = []
        for i in range(LANDINGS):
            target = os.path.join(folder, "faulty.wasm")
            # A fresh digest each time, so every landing really loads.
            with open(source, "rb") as f:
                wasm = f.read() + custom_section("comb-bench", str(i).encode())
            landed = time.monotonic()
            with open(target, "wb") as f:
                f.write(wasm)
            wait_until(lambda: status(f"http://127.0.0.1:{port}/faulty/ok") == 200)
            landings.append(time.monotonic() - landed)
            os.remove(target)
            wait_until(lambda: status(f"http://127.0.0.1:{port}/faulty/ok") == 404)
        stop(process)

        # 2. start-up with 20 plugins, cold then warm; 3. idle RSS
        folder = os.path.join(work, "twenty")
        os.mkdir(folder)
        stems = twenty_plugins(folder)
        cold, warm, rss = [], [], []
        for _ in range(STARTS):
            cache = tempfile.mkdtemp(dir=work)
            for runs, kind in ((cold, "cold"), (warm, "warm")):
                process, port, seconds = start(folder, cache)
                assert status(f"http://127.0.0.1:{port}/bench/home_activities_1") == 200
                runs.append(seconds)
                if kind == "warm":
                    time.sleep(1)
                    rss.append(rss_kib(process.pid))
                stop(process)
                # Let the cache worker finish writing before the warm start.
                time.sleep(1)

        ms = lambda s: f"{s * 1000:.0f} ms"
        print("| measure | median | min | max | goal |")
        print("|---|---|---|---|---|")
        print(f"| file landing → route serving ({LANDINGS}×) | {ms(statistics.median(landings))} | "
              f"{ms(min(landings))} | {ms(max(landings))} | ≤ 1 s |")
        print(f"| start to listening, 20 plugins, cold cache ({STARTS}×) | {ms(statistics.median(cold))} | "
              f"{ms(min(cold))} | {ms(max(cold))} | |")
        print(f"| start to listening, 20 plugins, warm cache ({STARTS}×) | {ms(statistics.median(warm))} | "
              f"{ms(min(warm))} | {ms(max(warm))} | ≤ 300 ms |")
        print(f"| warm / cold start | {statistics.median(warm) / statistics.median(cold):.2f} | | | |")
        print(f"| idle RSS, 20 plugins loaded | {statistics.median(rss) / 1024:.0f} MiB | "
              f"{min(rss) / 1024:.0f} MiB | {max(rss) / 1024:.0f} MiB | ≤ 150 MB |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
