#!/usr/bin/env python3
"""What a guest span costs, by the way a Rust plugin makes it: comb's own
span API (`comb_sdk::trace`) next to the OpenTelemetry API over
`wasi:otel` (`comb_sdk::otel`, the SDK in the guest), in one release comb
traced to the native OTLP sink. The test plugin `two_ways` makes N
nested spans with two attributes each either way; comb's CPU per request
at N = 0 and N = 20, interleaved over three rounds, gives the cost of one
span each way and their ratio, measured in the same run.

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/spans.py [REQUESTS]
All traffic is on loopback; the run is bounded (REQUESTS per route per
round, three rounds).
"""

import os
import shutil
import sys
import tempfile
import time

from neighbours import ROOT, get, serve
from throughput import start_sink, sink_count
from languages import cpu_seconds, quantile

SPANS = 20
ROUTES = [(way, n, f"/two_ways/{way}?n={n}") for way in ("comb", "otel") for n in (0, SPANS)]


def main():
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    scratch = tempfile.mkdtemp(prefix="comb-bench-spans-")
    sink_process, sink = start_sink()
    try:
        for under, name in (("plugins", "home_activities"), ("test-plugins", "two_ways")):
            shutil.copy(os.path.join(ROOT, "target", under, f"{name}.wasm"), scratch)
        comb, port = serve(scratch, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink})
        try:
            for _, _, route in ROUTES:
                assert get(port, route) == 200, route
            cpu = {route: 0.0 for _, _, route in ROUTES}
            latencies = {route: [] for _, _, route in ROUTES}
            # Three rounds, the routes in turn within each: a slow moment
            # of this shared machine falls on every route alike.
            for _ in range(3):
                for _, _, route in ROUTES:
                    before = cpu_seconds(comb.pid)
                    for _ in range(requests):
                        started = time.perf_counter()
                        assert get(port, route) == 200
                        latencies[route].append(time.perf_counter() - started)
                    cpu[route] += cpu_seconds(comb.pid) - before
        finally:
            comb.terminate()
            comb.wait()
        per_request = {route: cpu[route] / (3 * requests) * 1e6 for route in cpu}
        print(f"{'route':<28} {'p50 ms':>8} {'CPU us/req':>11}")
        for _, _, route in ROUTES:
            print(f"{route:<28} {quantile(latencies[route], 0.5) * 1000:>8.2f} "
                  f"{per_request[route]:>11.0f}")
        per_span = {}
        for way in ("comb", "otel"):
            spans = per_request[f"/two_ways/{way}?n={SPANS}"] - per_request[f"/two_ways/{way}?n=0"]
            per_span[way] = spans / SPANS
            print(f"one span, {way:<5} {per_span[way]:>6.1f} us of comb's CPU")
        if per_span["comb"] > 0:
            print(f"otel / comb per span: {per_span['otel'] / per_span['comb']:.2f}x")
        received = sink_count(sink)
        print(f"sink received {received['requests']} export requests, "
              f"{received['bytes'] / 1e6:.1f} MB")
    finally:
        sink_process.terminate()
        shutil.rmtree(scratch, ignore_errors=True)
    print("(sequential; CPU from /proc, 10 ms ticks: comb's process only, the guest's "
          "SDK included, the sink's not)")


if __name__ == "__main__":
    main()
