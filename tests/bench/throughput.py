#!/usr/bin/env python3
"""comb's throughput and overhead against native axum, in one run.

Variants, same machine, same load (wrk), interleaved over ROUNDS rounds:
  1. native axum building the same home_activities JSON (the physical limit);
  2. comb serving home_activities with tracing off (OTEL_SDK_DISABLED),
     and with no endpoint (spans recorded for comb's own page only);
  3. comb traced, exporting to a local OTLP sink that accepts and discards
     (target/release/otlp-sink, native, so it takes little of the CPU);
     and the same with 10 % of traces sampled (OTEL_TRACES_SAMPLER);
  4. comb traced, the collector dead (connection refused);
  5. comb traced, the collector black-holing (accepts, never answers).
Prints a markdown table (req/s, p50, p99, ratio to native, and the
server's CPU time per request, which shifts less than req/s on a busy
machine) and writes the raw numbers to target/bench/throughput.json. Loopback only; each run is a
few seconds. Run it with `cargo xtask bench`.

BENCH_BASELINE=<a comb binary> adds that build, tracing off and traced, to
the same interleaved rounds and prints the current build's ratios to it:
a before/after measured in one run. BENCH_BASELINE_PLUGIN=<a
home_activities.wasm> serves that plugin in the baseline's variants (and
makes this build the baseline when BENCH_BASELINE is unset): a change on
the guest's side, measured the same way.
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# BENCH_COMB: another comb build to measure (say, one from before a change).
COMB = os.environ.get("BENCH_COMB", os.path.join(ROOT, "target", "release", "comb"))
BASELINE_PLUGIN = os.environ.get("BENCH_BASELINE_PLUGIN")
BASELINE = os.environ.get("BENCH_BASELINE") or (COMB if BASELINE_PLUGIN else None)
NATIVE = os.path.join(ROOT, "target", "release", "native-home")
SINK = os.path.join(ROOT, "target", "release", "otlp-sink")
PLUGIN = os.path.join(ROOT, "target", "plugins", "home_activities.wasm")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
DURATION = os.environ.get("BENCH_DURATION", "5s")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "32")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink():
    """The native OTLP sink; returns its process and endpoint."""
    port = free_port()
    process = subprocess.Popen([SINK, f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(f"{endpoint}/count")
    return process, endpoint


def sink_count(endpoint):
    out = subprocess.run(["curl", "-sf", f"{endpoint}/count"], capture_output=True, text=True).stdout
    return json.loads(out)


def start_black_hole():
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in iter(int, 1)], daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def dead_endpoint():
    return f"http://127.0.0.1:{free_port()}"


def wait_for(url):
    deadline = time.monotonic() + 60
    while subprocess.run(["curl", "-sf", "-o", "/dev/null", url]).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered")
        time.sleep(0.1)


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url, pid, connections=CONNECTIONS, script=None):
    """wrk on `url` (with a Lua `script`, if given) after a short warm-up;
    req/s, latency and the server's CPU per request."""
    extra = ["-s", script] if script else []
    subprocess.run(["wrk", "-t1", "-c4", "-d1s", url] + extra, capture_output=True)  # warm up
    cpu = cpu_seconds(pid)
    threads = min(2, int(connections))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{DURATION}", "--latency", url]
                         + extra, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pid) - cpu
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    latency = {p: to_ms(v) for p, v in re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": latency["50"], "p99_ms": latency["99"],
            "cpu_us_per_request": cpu / max(requests, 1) * 1e6,
            "errors": int(errors.group(1)) if errors else 0}


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_native():
    port = free_port()
    process = subprocess.Popen([NATIVE, f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/activities/home"
        wait_for(url)
        return load(url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def run_comb(folder, env_extra, binary=COMB):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(env_extra)
    env["RUST_LOG"] = "warn"
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        # The admin listener on, as comb runs by default: its page records spans.
        [binary, "serve", "--plugins", folder, "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{free_port()}", "--no-cache"],
        stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        url = f"http://127.0.0.1:{port}/api/activities/home"
        wait_for(url)
        result = load(url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    log.seek(0)
    text = log.read()
    result["export_warnings"] = sum(1 for line in text.splitlines() if "opentelemetry" in line)
    result["dropped_logged"] = "Dropped" in text or "dropped" in text
    # Spans comb dropped (export queue full), from its warning at shutdown.
    found = re.search(r"dropped_span_count=(\d+)", text)
    result["dropped_spans"] = int(found.group(1)) if found else 0
    return result


def main():
    folder = tempfile.mkdtemp(prefix="comb-bench-")
    shutil.copy(PLUGIN, folder)
    (sink_process, sink), black_hole = start_sink(), start_black_hole()
    variants = {
        "1 native axum": lambda: run_native(),
        "2 comb, tracing off": lambda: run_comb(folder, {"OTEL_SDK_DISABLED": "true"}),
        "2b comb, no endpoint (spans kept for comb's page only)": lambda: run_comb(folder, {}),
        "3 comb, traced to a sink": lambda: run_comb(folder, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink}),
        "3b comb, traced to a sink, 10 % sampled": lambda: run_comb(folder, {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
        "4 comb, collector dead": lambda: run_comb(folder, {"OTEL_EXPORTER_OTLP_ENDPOINT": dead_endpoint()}),
        "5 comb, collector black-holing": lambda: run_comb(
            folder, {"OTEL_EXPORTER_OTLP_ENDPOINT": black_hole, "OTEL_EXPORTER_OTLP_TIMEOUT": "2000"}),
    }
    baseline_folder = folder
    if BASELINE:
        if BASELINE_PLUGIN:
            baseline_folder = tempfile.mkdtemp(prefix="comb-bench-baseline-")
            shutil.copy(BASELINE_PLUGIN, os.path.join(baseline_folder, os.path.basename(PLUGIN)))
        variants["6 baseline, tracing off"] = lambda: run_comb(
            baseline_folder, {"OTEL_SDK_DISABLED": "true"}, BASELINE)
        variants["6b baseline, traced to a sink"] = lambda: run_comb(
            baseline_folder, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink}, BASELINE)
    try:
        raw = {name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, run in variants.items():
                raw[name].append(run())
        native = statistics.median(r["rps"] for r in raw["1 native axum"])
        off = statistics.median(r["rps"] for r in raw["2 comb, tracing off"])
        print(f"wrk -t2 -c{CONNECTIONS} -d{DURATION} on GET /api/activities/home, {ROUNDS} interleaved rounds\n")
        print("| variant | req/s (median) | req/s (rounds) | p50 ms | p99 ms | vs native | vs tracing off | CPU µs/req | non-2xx |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, runs in raw.items():
            rps = statistics.median(r["rps"] for r in runs)
            p50 = statistics.median(r["p50_ms"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            rounds = ", ".join(f"{r['rps']:.0f}" for r in runs)
            cpu = statistics.median(r["cpu_us_per_request"] for r in runs)
            print(f"| {name} | {rps:.0f} | {rounds} | {p50:.2f} | {p99:.2f} | "
                  f"{rps / native:.2f} | {rps / off:.2f} | {cpu:.1f} | {sum(r['errors'] for r in runs)} |")
        if BASELINE:
            against = BASELINE + (f" serving {BASELINE_PLUGIN}" if BASELINE_PLUGIN else "")
            print(f"\nthis build vs {against}, same rounds:")
            for mine, theirs in [("2 comb, tracing off", "6 baseline, tracing off"),
                                 ("3 comb, traced to a sink", "6b baseline, traced to a sink")]:
                rps = [statistics.median(r["rps"] for r in raw[n]) for n in (mine, theirs)]
                cpu = [statistics.median(r["cpu_us_per_request"] for r in raw[n]) for n in (mine, theirs)]
                print(f"- {mine[2:]}: req/s {rps[0] / rps[1]:.2f}×, "
                      f"CPU µs/req {cpu[1]:.1f} → {cpu[0]:.1f} ({cpu[0] / cpu[1]:.2f}×)")
        received = sink_count(sink)
        print(f"\nsink received {received['requests']} export requests, {received['bytes'] / 1e6:.1f} MB")
        for name, runs in raw.items():
            if name.startswith("1 "):
                continue
            dropped = [r.get("dropped_spans", 0) for r in runs]
            print(f"{name}: spans dropped {sum(dropped)} ({', '.join(map(str, dropped))} by round)"
                  + (" — comb logged dropping" if any(r.get("dropped_logged") for r in runs) else ""))
        os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
        with open(os.path.join(ROOT, "target", "bench", "throughput.json"), "w") as f:
            json.dump({"rounds": ROUNDS, "duration": DURATION, "connections": CONNECTIONS, "raw": raw}, f, indent=2)
    finally:
        sink_process.terminate()
        for scratch in {folder, baseline_folder}:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
