#!/usr/bin/env python3
"""How comb's cost grows with the work, in one run.

1. The scale curve: GET /api/activities/home at 1, 16, 64 and 256
   connections on native axum (the ceiling), comb with tracing off, and
   comb traced to a local OTLP sink: req/s, p50, p99, server CPU per
   request and RSS at the end of each load.
2. A mixed workload: wrk cycling over the ten Cruddur routes (seven GETs,
   three POSTs with JSON bodies) on a comb serving every bundled plugin
   (Rust, Python, JavaScript), tracing off and traced: req/s, p99, CPU per
   request, and RSS loaded, under load (peak) and after five idle seconds.

Rounds are interleaved (BENCH_ROUNDS, default 2), so a slow moment of this
shared machine falls on every variant alike. BENCH_COMB measures another
comb build; BENCH_BASELINE=<a comb binary> adds that build to the same
rounds (its rows are marked "baseline"), for a before/after of CPU and RSS.
Loopback only; every load is a few seconds (BENCH_DURATION). Writes the raw
numbers to target/bench/scale.json. Run it with `cargo xtask bench`.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

import throughput
from throughput import COMB, NATIVE, PLUGIN, ROOT, free_port, start_sink, wait_for

BASELINE = os.environ.get("BENCH_BASELINE")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CONNECTIONS = [1, 16, 64, 256]
MIXED_CONNECTIONS = 32
PLUGINS = os.path.join(ROOT, "target", "plugins")

# The ten Cruddur routes, as the frontend calls them (see tests/e2e/cruddur.rs).
ACTIVITY = "68f126b0-1ceb-4a33-88be-d90fa7109eee"
MIXED = [
    ("GET", "/api/activities/home", None),
    ("GET", "/api/activities/notifications", None),
    ("GET", "/api/activities/search?term=cloud", None),
    ("GET", "/api/activities/@andrewbrown", None),
    ("GET", f"/api/activities/{ACTIVITY}", None),
    ("GET", "/api/message_groups", None),
    ("GET", "/api/messages/@worf", None),
    ("POST", "/api/activities", '{"message": "Hello", "ttl": "1-day"}'),
    ("POST", f"/api/activities/{ACTIVITY}/reply", '{"message": "Qapla\'"}'),
    ("POST", "/api/messages", '{"message": "Hi", "user_receiver_handle": "worf"}'),
]


def mixed_script(folder):
    """A wrk Lua script sending MIXED in turn."""
    def lua(text):
        return "nil" if text is None else json.dumps(text)
    rows = ",\n".join(f"  {{{lua(m)}, {lua(p)}, {lua(b)}}}" for m, p, b in MIXED)
    path = os.path.join(folder, "mixed.lua")
    with open(path, "w") as f:
        f.write(f"""local routes = {{
{rows}
}}
local i = 0
local json = {{["content-type"] = "application/json"}}
request = function()
  i = i % #routes + 1
  local r = routes[i]
  return wrk.format(r[1], r[2], r[3] and json or nil, r[3])
end
""")
    return path


def rss_mib(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(url, pid, connections, script=None):
    """throughput.load, plus the server's RSS at the end of the load."""
    result = throughput.load(url, pid, connections, script)
    result["rss_mib"] = rss_mib(pid)
    return result


class Server:
    """A native or comb server on a free port, stopped on exit."""

    def __init__(self, command, env=None, ready="/api/activities/home"):
        self.port = free_port()
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command(self.port), env=env,
                                        stdout=subprocess.DEVNULL, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self.url + ready)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.seek(0)
        found = re.search(r"dropped_span_count=(\d+)", self.log.read())
        # Spans the batch processor dropped (queue full), from its warning at shutdown.
        self.dropped_spans = int(found.group(1)) if found else 0


def comb(binary, folder, cache, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ROLLBAR_", "COMB_"))}
    env.update(env_extra, RUST_LOG="warn")
    return Server(lambda port: [binary, "serve", "--plugins", folder, "--cache-dir", cache,
                                "--listen", f"127.0.0.1:{port}",
                                "--admin-listen", f"127.0.0.1:{free_port()}"], env)


def main():
    scratch = tempfile.mkdtemp(prefix="comb-scale-")
    home = os.path.join(scratch, "home")
    os.makedirs(home)
    shutil.copy(PLUGIN, home)
    cache = os.path.join(scratch, "cache")
    script = mixed_script(scratch)
    sink_process, sink = start_sink()
    builds = [("comb", COMB)] + ([("baseline", BASELINE)] if BASELINE else [])
    modes = [("tracing off", {"OTEL_SDK_DISABLED": "true"}),
             ("traced", {"OTEL_EXPORTER_OTLP_ENDPOINT": sink})]
    try:
        # Compile every plugin once, so each start below loads from the cache.
        for _, binary in builds:
            with comb(binary, PLUGINS, cache, modes[0][1]) as server:
                wait_for(server.url + "/api/python/activities/home")
        curve = {}
        mixed = {}
        dropped = {}
        for _ in range(ROUNDS):
            with Server(lambda port: [NATIVE, f"127.0.0.1:{port}"]) as native:
                for n in CONNECTIONS:
                    curve.setdefault(("native axum", n), []).append(
                        load(native.url + "/api/activities/home", native.process.pid, n))
            for build, binary in builds:
                for mode, env in modes:
                    name = f"{build}, {mode}"
                    with comb(binary, home, cache, env) as server:
                        for n in CONNECTIONS:
                            curve.setdefault((name, n), []).append(
                                load(server.url + "/api/activities/home", server.process.pid, n))
                    dropped[name] = dropped.get(name, 0) + server.dropped_spans
                    with comb(binary, PLUGINS, cache, env) as server:
                        pid = server.process.pid
                        wait_for(server.url + "/api/python/activities/home")
                        loaded = rss_mib(pid)
                        result = load(server.url + "/", pid, MIXED_CONNECTIONS, script)
                        result["rss_loaded_mib"] = loaded
                        result["rss_peak_mib"] = rss_mib(pid, "VmHWM")
                        time.sleep(5)
                        result["rss_idle_mib"] = rss_mib(pid)
                    result["dropped_spans"] = server.dropped_spans
                    mixed.setdefault(name, []).append(result)
        report(curve, mixed, dropped)
        os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
        with open(os.path.join(ROOT, "target", "bench", "scale.json"), "w") as f:
            json.dump({"rounds": ROUNDS, "duration": throughput.DURATION,
                       "curve": [{"variant": v, "connections": n, "runs": r}
                                 for (v, n), r in curve.items()],
                       "mixed": mixed, "curve_dropped_spans": dropped}, f, indent=2)
    finally:
        sink_process.terminate()
        shutil.rmtree(scratch, ignore_errors=True)


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def report(curve, mixed, dropped):
    print(f"Scale curve: wrk -d{throughput.DURATION} on GET /api/activities/home, {ROUNDS} interleaved rounds (medians)\n")
    print("| variant | connections | req/s | vs native | p50 ms | p99 ms | p99/p50 | CPU µs/req | RSS MiB | non-2xx |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, n), runs in curve.items():
        native = median(curve[("native axum", n)], "rps")
        rps, p50, p99 = median(runs, "rps"), median(runs, "p50_ms"), median(runs, "p99_ms")
        print(f"| {name} | {n} | {rps:.0f} | {rps / native:.2f} | {p50:.2f} | {p99:.2f} | "
              f"{p99 / p50:.1f} | {median(runs, 'cpu_us_per_request'):.1f} | "
              f"{median(runs, 'rss_mib'):.0f} | {sum(r['errors'] for r in runs)} |")
    print("\nSpans the batch processor dropped over the curve (all rounds): "
          + ", ".join(f"{name}: {count}" for name, count in dropped.items()))
    print(f"\nMixed workload: the ten Cruddur routes in turn, every bundled plugin loaded, "
          f"wrk -c{MIXED_CONNECTIONS} -d{throughput.DURATION} (medians)\n")
    print("| variant | req/s | p50 ms | p99 ms | CPU µs/req | RSS loaded | RSS peak | RSS 5 s idle | non-2xx | spans dropped |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in mixed.items():
        print(f"| {name} | {median(runs, 'rps'):.0f} | {median(runs, 'p50_ms'):.2f} | "
              f"{median(runs, 'p99_ms'):.2f} | {median(runs, 'cpu_us_per_request'):.1f} | "
              f"{median(runs, 'rss_loaded_mib'):.0f} MiB | {median(runs, 'rss_peak_mib'):.0f} MiB | "
              f"{median(runs, 'rss_idle_mib'):.0f} MiB | {sum(r['errors'] for r in runs)} | "
              f"{sum(r['dropped_spans'] for r in runs)} |")


if __name__ == "__main__":
    main()
