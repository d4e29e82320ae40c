#!/usr/bin/env python3
"""What a plugin costs in each language: the Rust, Python and JavaScript
plugins side by side in one release comb: first compile (a cold compile
cache) and a restart's load (a warm one), sequential latency and server
CPU per request, comb's RSS loaded and after the load. Twice: with a
fresh instance per call (comb's default), then with the Python and
JavaScript plugins reusing instances as their bundled sidecars ask
(`max_instance_reuse_count`). Then the standard `wasi:http` components,
the WASI 0.2 `wasi:http/proxy` test component next to its WASI 0.3
`wasi:http/service` twin (same answer), beside the Rust home plugin; and
again with the 0.3 service and the home plugin reusing their instances
(a 0.2 proxy's instance serves one request).

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/languages.py [REQUESTS] [fresh|reused|wasi-http|wasi-http-reused ...]
All traffic is on loopback; the run is bounded (REQUESTS per route per
round, three rounds).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from neighbours import COMB, ROOT, free_port, get

PLUGINS = [
    # (folder under target/, file, route and its status, language or kind)
    ("plugins", "home_activities", "/api/activities/home", 200, "Rust"),
    ("plugins", "home_activities_py", "/api/python/activities/home", 200, "Python"),
    ("plugins", "notifications_activities", "/api/activities/notifications", 200, "Rust"),
    ("plugins", "notifications_activities_js", "/api/js/activities/notifications", 200, "JavaScript"),
]
WASI_HTTP = [
    ("plugins", "home_activities", "/api/activities/home", 200, "comb"),
    ("test-plugins", "proxy_hello", "/proxy_hello/bench", 201, "WASI 0.2"),
    ("test-plugins", "service_hello", "/service_hello/bench", 201, "WASI 0.3"),
]
TICKS = os.sysconf("SC_CLK_TCK")


def start(folder, cache, plugins):
    port, admin = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ROLLBAR_", "COMB_"))}
    clean.update(RUST_LOG="warn", OTEL_SDK_DISABLED="true")
    comb = subprocess.Popen(
        [COMB, "serve", "--plugins", folder, "--cache-dir", cache,
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean)
    deadline = time.monotonic() + 300
    while True:
        try:
            if all(get(port, route, timeout=5) == status for _, _, route, status, _ in plugins):
                return comb, port, admin
        except OSError:
            pass
        if time.monotonic() > deadline or comb.poll() is not None:
            comb.kill()
            raise RuntimeError("comb did not serve every plugin")
        time.sleep(0.2)


def compile_ms(admin):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/_comb/plugins") as response:
        reports = json.load(response)
    return {r["plugin"]["name"]: r["plugin"]["compile_ms"] for r in reports if r["plugin"]}


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(folder, cache, requests, plugins):
    """One comb over `folder`: compile times cold and cached, and per
    plugin latencies and CPU over three interleaved rounds."""
    comb, _, admin = start(folder, cache, plugins)
    cold = compile_ms(admin)
    comb.terminate()
    comb.wait()
    comb, port, admin = start(folder, cache, plugins)
    warm = compile_ms(admin)
    rss_loaded = status_kib(comb.pid, "VmRSS")
    latencies = {name: [] for _, name, _, _, _ in plugins}
    cpu = {name: 0.0 for _, name, _, _, _ in plugins}
    # Three rounds, the plugins in turn within each: a slow moment of
    # this shared machine falls on every plugin alike.
    for _ in range(3):
        for _, name, route, status, _ in plugins:
            before = cpu_seconds(comb.pid)
            for _ in range(requests):
                started = time.perf_counter()
                assert get(port, route) == status
                latencies[name].append(time.perf_counter() - started)
            cpu[name] += cpu_seconds(comb.pid) - before
    rss_after = status_kib(comb.pid, "VmHWM")
    comb.terminate()
    comb.wait()
    return cold, warm, latencies, cpu, rss_loaded, rss_after


def quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    scratch = tempfile.mkdtemp(prefix="comb-bench-languages-")
    print(f"{'plugin':<30} {'language':<11} {'instances':<10} {'size MB':>8} {'compile s':>10} "
          f"{'cached ms':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}")
    try:
        modes = (("fresh", PLUGINS), ("reused", PLUGINS), ("wasi-http", WASI_HTTP),
                 ("wasi-http-reused", WASI_HTTP))
        for mode, plugins in [m for m in modes if m[0] in (sys.argv[2:] or [m[0]])]:
            folder = os.path.join(scratch, mode, "plugins")
            cache = os.path.join(scratch, mode, "cache")
            os.makedirs(folder)
            for under, name, _, _, _ in plugins:
                built = os.path.join(ROOT, "target", under)
                shutil.copy(os.path.join(built, f"{name}.wasm"), folder)
                sidecar = os.path.join(built, f"{name}.toml")
                if mode == "reused" and os.path.exists(sidecar):
                    shutil.copy(sidecar, folder)
                # Every instance that may serve more than one request does
                # (a 0.2 proxy's serves one).
                if mode == "wasi-http-reused" and name != "proxy_hello":
                    with open(os.path.join(folder, f"{name}.toml"), "w") as out:
                        out.write("[limits]\nmax_instance_reuse_count = 1000\n")
            cold, warm, latencies, cpu, rss_loaded, rss_after = measure(folder, cache, requests, plugins)
            for _, name, _, _, language in plugins:
                samples = latencies[name]
                size = os.path.getsize(os.path.join(folder, f"{name}.wasm"))
                reused = os.path.exists(os.path.join(folder, f"{name}.toml"))
                print(f"{name:<30} {language:<11} {'reused' if reused else 'fresh':<10} "
                      f"{size / 1e6:>8.1f} {cold[name] / 1000:>10.2f} "
                      f"{warm[name]:>10.1f} {quantile(samples, 0.5) * 1000:>8.2f} "
                      f"{quantile(samples, 0.99) * 1000:>8.2f} {cpu[name] / len(samples) * 1e6:>11.0f}")
            print(f"comb RSS ({mode}): {rss_loaded / 1024:.0f} MiB with the {len(plugins)} loaded, "
                  f"{rss_after / 1024:.0f} MiB at most after {3 * requests} requests each")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("(sequential, tracing off; CPU from /proc, 10 ms ticks)")


if __name__ == "__main__":
    main()
