#!/usr/bin/env python3
"""What a guest profile costs (POST /_comb/api/profile): comb's CPU per
request and its latency for one plugin's calls while nobody profiles it
and while a profile of it is taken, and a neighbour's latency in both,
interleaved over three rounds in one release comb (the ratios are the
figures; this machine is shared and noisy). Then how long starting a
profile takes (reading the component's symbols), per plugin, and how big
the profile is.

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/guest_profile.py [REQUESTS]
All traffic is on loopback; the run is bounded (REQUESTS per phase, three
rounds; each profile at most its calls or 60 s).
"""

import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

from neighbours import ROOT, get
from languages import cpu_seconds, quantile, start

PROFILED = "/misbehave/spin?ms=2"
NEIGHBOUR = "/api/activities/home"
PLUGINS = [("home_activities", "plugins"), ("home_activities_py", "plugins"),
           ("misbehave", "test-plugins")]


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


def phase(comb, port, requests):
    """CPU per request and latencies of PROFILED, then NEIGHBOUR's latencies."""
    before = cpu_seconds(comb.pid)
    own = []
    for _ in range(requests):
        started = time.perf_counter()
        assert get(port, PROFILED) == 200
        own.append(time.perf_counter() - started)
    cpu = (cpu_seconds(comb.pid) - before) / requests
    neighbour = []
    for _ in range(requests):
        started = time.perf_counter()
        assert get(port, NEIGHBOUR) == 200
        neighbour.append(time.perf_counter() - started)
    return cpu, own, neighbour


def main():
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    scratch = tempfile.mkdtemp(prefix="comb-bench-profile-")
    cache = os.path.join(ROOT, "target", "bench-compile-cache")
    try:
        for name, under in PLUGINS:
            for suffix in (".wasm", ".toml"):
                path = os.path.join(ROOT, "target", under, name + suffix)
                if os.path.exists(path):
                    shutil.copy(path, scratch)
        routes = [(None, None, PROFILED, 200, None), (None, None, NEIGHBOUR, 200, None)]
        comb, port, admin = start(scratch, cache, routes)
        try:
            results = {"off": ([], [], []), "on": ([], [], [])}
            profiles = []
            for _ in range(3):
                for mode in ("off", "on"):
                    taking = None
                    if mode == "on":
                        # A profile of the profiled plugin's next calls.
                        taking = threading.Thread(
                            target=profile, args=(admin, "misbehave", 60, requests, profiles))
                        taking.start()
                        time.sleep(0.5)
                    cpu, own, neighbour = phase(comb, port, requests)
                    if taking:
                        taking.join()
                    results[mode][0].append(cpu)
                    results[mode][1].extend(own)
                    results[mode][2].extend(neighbour)
            starts = {}
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/_comb/plugins") as response:
                names = [r["plugin"]["name"] for r in json.load(response) if r["plugin"]]
            for name in sorted(names):
                starts[name] = profile(admin, name, 1)[0] - 1.0
        finally:
            comb.terminate()
            comb.wait()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    cpu = {mode: sum(v[0]) / len(v[0]) * 1e6 for mode, v in results.items()}
    print(f"{'':<34} {'off':>9} {'on':>9} {'on/off':>7}")
    print(f"{'CPU per ' + PROFILED + ' (us)':<34} {cpu['off']:>9.0f} {cpu['on']:>9.0f} "
          f"{cpu['on'] / cpu['off']:>6.2f}x")
    for label, index, route in (("p50", 1, PROFILED), ("p50", 2, NEIGHBOUR)):
        off = quantile(results["off"][index], 0.5) * 1000
        on = quantile(results["on"][index], 0.5) * 1000
        print(f"{label + ' ' + route + ' (ms)':<34} {off:>9.2f} {on:>9.2f} {on / off:>6.2f}x")
    calls = sum(p[1] for p in profiles)
    samples = sum(p[2] for p in profiles)
    print(f"profiled: {calls} calls, {samples} samples, {cpu['on'] - cpu['off']:.0f} us of comb's "
          f"CPU per profiled call ({(cpu['on'] - cpu['off']) * calls / max(samples, 1):.1f} us "
          f"per sample); profile {profiles[-1][3] / 1024:.0f} KiB for {profiles[-1][2]} samples")
    for name, took in starts.items():
        print(f"starting a profile of {name}: {took * 1000:.0f} ms (its symbols read)")
    print("(sequential; CPU from /proc, 10 ms ticks; the neighbour is never profiled)")


if __name__ == "__main__":
    main()
