#!/usr/bin/env python3
"""A storm of failing calls with Rollbar on: latency of a healthy route
(GET /api/activities/home) while PANICKERS clients loop on a panicking
route, with Rollbar reporting to a slow stand-in and without Rollbar, and
how many items the storm sent (bounded by the per-plugin rate).

Usage: cargo build --release -p comb && cargo xtask plugins &&
       python3 tests/bench/storm.py [PANICKERS]
All traffic is on loopback; the run is bounded (a few seconds a phase).
"""

import contextlib
import http.server
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from neighbours import PHASE_S, ROOT, latencies_while, neighbour_latencies, quantile, serve

PLUGINS = {"home_activities": os.path.join(ROOT, "target", "plugins"),
           "faulty": os.path.join(ROOT, "target", "test-plugins")}
# A slow Rollbar: each item takes this long to be accepted.
ROLLBAR_DELAY_S = 0.2


class StandIn(http.server.BaseHTTPRequestHandler):
    items = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.endswith("/item/"):
            StandIn.items += 1
        time.sleep(ROLLBAR_DELAY_S)
        body = b'{"err":0}'
        # comb gives up on items still in flight when it shuts down (its
        # 3 s wait): the answer then finds the connection closed.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def run(folder, panickers, rollbar_endpoint):
    """Idle and storm latencies of one comb, and the panics it served."""
    env = {}
    if rollbar_endpoint:
        env = {"ROLLBAR_ACCESS_TOKEN": "bench", "ROLLBAR_ENDPOINT": rollbar_endpoint}
    comb, port = serve(folder, env)
    try:
        idle = neighbour_latencies(port, PHASE_S)
        storm, panics = latencies_while(port, panickers, "/faulty/panic", 500)
    finally:
        comb.send_signal(signal.SIGTERM)
        comb.wait(timeout=30)
    return idle, storm, panics


def main():
    panickers = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    folder = tempfile.mkdtemp(prefix="comb-bench-")
    for name, built in PLUGINS.items():
        shutil.copy(os.path.join(built, f"{name}.wasm"), folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/api/1/"
    try:
        with_rollbar = run(folder, panickers, endpoint)
        without = run(folder, panickers, None)
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"GET /api/activities/home, sequential, {PHASE_S:.0f} s a phase, while {panickers} "
          f"clients loop on a panicking route; {os.cpu_count()} cores; release build\n")
    print("| comb | phase | requests | p50 ms | p99 ms | panics served | Rollbar items |")
    print("|---|---|---|---|---|---|---|")
    for name, (idle, storm, panics), items in [("Rollbar on", with_rollbar, StandIn.items),
                                               ("Rollbar off", without, "-")]:
        print(f"| {name} | idle | {len(idle)} | {quantile(idle, 0.5):.2f} | {quantile(idle, 0.99):.2f} | | |")
        print(f"| {name} | storm | {len(storm)} | {quantile(storm, 0.5):.2f} | "
              f"{quantile(storm, 0.99):.2f} | {panics} | {items} |")
    for name, (idle, storm, _) in [("Rollbar on", with_rollbar), ("Rollbar off", without)]:
        print(f"\n{name}, storm / idle: p50 {quantile(storm, 0.5) / quantile(idle, 0.5):.2f}x, "
              f"p99 {quantile(storm, 0.99) / quantile(idle, 0.99):.2f}x")


if __name__ == "__main__":
    main()
