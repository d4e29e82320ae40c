#!/usr/bin/env python3
"""What comparing plugins costs, each part off and on, as ratios measured
in one run (this machine is shared and noisy): comb's CPU per request and
latency, interleaved over three rounds, in release combs traced to the
native OTLP sink.

- Log records: a plugin logging ten lines a call, with
  OTEL_LOGS_EXPORTER=otlp against none (two combs, taking turns).
- A guest profile (POST /_comb/api/profile): one plugin's calls while
  nobody profiles it and while a profile of it is taken, and a
  neighbour's latency in both; then how long starting a profile takes
  (reading the component's symbols) per plugin, and its size.
- A canary: the home route with a canary (a copy of the plugin, at 50 %)
  against the same comb without one (two combs, taking turns).

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/comparing.py [REQUESTS]
All traffic is on loopback; the run is bounded (REQUESTS per phase, three
rounds; each profile at most its calls or 60 s).
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from neighbours import COMB, ROOT, free_port, get
from languages import cpu_seconds, quantile
from throughput import start_sink

PROFILED = "/misbehave/spin?ms=2"
NEIGHBOUR = "/api/activities/home"
LOGGING = "/misbehave/log?lines=10"
PLUGINS = [("home_activities", "plugins"), ("home_activities_py", "plugins"),
           ("misbehave", "test-plugins")]
CANARY = b"[canary]\nof = \"home_activities\"\nweight = 50\n"


def start(folder, env):
    """A release comb on `folder` with `env`; waits until it serves."""
    port, admin = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ROLLBAR_", "COMB_"))}
    clean.update(RUST_LOG="warn", **env)
    comb = subprocess.Popen(
        [COMB, "serve", "--plugins", folder, "--cache-dir",
         os.path.join(ROOT, "target", "bench-compile-cache"),
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean)
    deadline = time.monotonic() + 300
    while True:
        try:
            if get(port, NEIGHBOUR, timeout=5) == 200:
                return comb, port, admin
        except OSError:
            pass
        if time.monotonic() > deadline or comb.poll() is not None:
            comb.kill()
            raise RuntimeError("comb did not serve")
        time.sleep(0.2)


def folder(scratch, name, plugins, extra=()):
    """A plugins folder under `scratch` with `plugins` and `extra` files."""
    path = os.path.join(scratch, name)
    os.makedirs(path)
    for plugin, under in plugins:
        for suffix in (".wasm", ".toml"):
            built = os.path.join(ROOT, "target", under, plugin + suffix)
            if os.path.exists(built):
                shutil.copy(built, path)
    for file, contents in extra:
        with open(os.path.join(path, file), "wb") as out:
            out.write(contents)
    return path


def profile(admin, plugin, seconds, calls=None, result=None):
    """Takes a profile; returns (seconds it took, calls, samples, bytes)."""
    query = f"plugin={plugin}&seconds={seconds}" + (f"&calls={calls}" if calls else "")
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=120)
    started = time.perf_counter()
    conn.request("POST", f"/_comb/api/profile?{query}")
    response = conn.getresponse()
    body = response.read()
    took = time.perf_counter() - started
    assert response.status == 200, (response.status, body[:200])
    outcome = (took, int(response.getheader("comb-profile-calls")),
               int(response.getheader("comb-profile-samples")), len(body))
    if result is not None:
        result.append(outcome)
    return outcome


def sequential(comb, port, route, requests):
    """CPU per request (s) and latencies of `requests` calls of `route`."""
    before = cpu_seconds(comb.pid)
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        assert get(port, route) == 200, route
        latencies.append(time.perf_counter() - started)
    return (cpu_seconds(comb.pid) - before) / requests, latencies


def off_and_on(off, on, route, requests):
    """Interleaves `requests` calls of `route` on two combs over three
    rounds; returns each one's mean CPU per request (us) and p50 (ms)."""
    results = {}
    for _ in range(3):
        for name, (comb, port, _) in (("off", off), ("on", on)):
            cpu, latencies = sequential(comb, port, route, requests)
            cpus, all_latencies = results.setdefault(name, ([], []))
            cpus.append(cpu)
            all_latencies.extend(latencies)
    return {name: (sum(c) / len(c) * 1e6, quantile(l, 0.5) * 1000) for name, (c, l) in results.items()}


def show(what, measured):
    (off_cpu, off_p50), (on_cpu, on_p50) = measured["off"], measured["on"]
    print(f"{what:<44} CPU {off_cpu:>6.0f} -> {on_cpu:>6.0f} us/req ({on_cpu / off_cpu:.2f}x), "
          f"p50 {off_p50:.2f} -> {on_p50:.2f} ms ({on_p50 / off_p50:.2f}x)")


def stop(*combs):
    for comb, _, _ in combs:
        comb.terminate()
        comb.wait()


def main():
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    scratch = tempfile.mkdtemp(prefix="comb-bench-comparing-")
    sink_process, sink = start_sink()
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_METRICS_EXPORTER": "none"}
    try:
        # Log records: exported or not.
        plugins = folder(scratch, "logs", PLUGINS[:1] + PLUGINS[2:])
        quiet = start(plugins, {**traced, "OTEL_LOGS_EXPORTER": "none"})
        logging = start(plugins, traced)
        try:
            show(f"log records ({LOGGING})", off_and_on(quiet, logging, LOGGING, requests))
        finally:
            stop(quiet, logging)

        # A canary: none, then a copy of the plugin at 50 %.
        with open(os.path.join(ROOT, "target", "plugins", "home_activities.wasm"), "rb") as wasm:
            copy = wasm.read()
        alone = start(folder(scratch, "alone", PLUGINS[:1]), traced)
        paired = start(folder(scratch, "canary", PLUGINS[:1],
                              [("home_canary.wasm", copy), ("home_canary.toml", CANARY)]), traced)
        try:
            show(f"a canary at 50 % ({NEIGHBOUR})", off_and_on(alone, paired, NEIGHBOUR, requests))
        finally:
            stop(alone, paired)

        # A guest profile, in one comb: off, then on, in turns.
        comb, port, admin = start(folder(scratch, "profile", PLUGINS), traced)
        try:
            results = {"off": ([], [], []), "on": ([], [], [])}
            profiles = []
            for _ in range(3):
                for mode in ("off", "on"):
                    taking = None
                    if mode == "on":
                        taking = threading.Thread(
                            target=profile, args=(admin, "misbehave", 60, requests, profiles))
                        taking.start()
                        time.sleep(0.5)
                    cpu, own = sequential(comb, port, PROFILED, requests)
                    _, neighbour = sequential(comb, port, NEIGHBOUR, requests)
                    if taking:
                        taking.join()
                    results[mode][0].append(cpu)
                    results[mode][1].extend(own)
                    results[mode][2].extend(neighbour)
            deadline = time.monotonic() + 300
            while True:  # the Python plugin may still be compiling
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/_comb/plugins") as response:
                    names = sorted(r["plugin"]["name"] for r in json.load(response) if r["plugin"])
                if len(names) == len(PLUGINS) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            starts = {name: profile(admin, name, 1)[0] - 1.0 for name in names}
        finally:
            stop((comb, port, admin))
    finally:
        sink_process.terminate()
        shutil.rmtree(scratch, ignore_errors=True)

    cpu = {mode: sum(v[0]) / len(v[0]) * 1e6 for mode, v in results.items()}
    p50 = {mode: quantile(v[1], 0.5) * 1000 for mode, v in results.items()}
    show(f"a guest profile ({PROFILED})", {m: (cpu[m], p50[m]) for m in ("off", "on")})
    off, on = (quantile(results[m][2], 0.5) * 1000 for m in ("off", "on"))
    print(f"{'  its neighbour (' + NEIGHBOUR + ') p50':<44} {off:.2f} -> {on:.2f} ms ({on / off:.2f}x)")
    calls = sum(p[1] for p in profiles)
    samples = sum(p[2] for p in profiles)
    print(f"  profiled: {calls} calls, {samples} samples, {cpu['on'] - cpu['off']:.0f} us of comb's "
          f"CPU per profiled call ({(cpu['on'] - cpu['off']) * calls / max(samples, 1):.1f} us per "
          f"sample); a profile of {profiles[-1][2]} samples is {profiles[-1][3] / 1024:.0f} KiB")
    for name, took in starts.items():
        print(f"  starting a profile of {name}: {took * 1000:.0f} ms (its symbols read)")
    print("(sequential; CPU from /proc, 10 ms ticks, comb's process only; the sink's not)")


if __name__ == "__main__":
    main()
