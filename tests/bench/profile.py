#!/usr/bin/env python3
"""Where a traced request's CPU goes: the per-stage table of
docs/performance.md, measured again.

Serves GET /api/activities/home from a release comb traced to the native
OTLP sink (as throughput.py's "traced to a sink"), loads it with wrk, and
samples comb with `perf record --call-graph dwarf` for a few seconds. Then
sums `perf report --children` by stage: each stage is the largest
inclusive share among the symbols that match it (a stage counts its
children), the allocator and memmove rows are self time. DWARF unwinding
leaves part of the samples without a full stack, so the request path's
shares are lower bounds.

Needs perf (Debian: linux-perf) and the release binaries (`cargo xtask
bench` builds them). BENCH_COMB measures another comb build. Loopback only;
about half a minute, plus perf's report. Writes the full report to
target/bench/profile.txt.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from throughput import COMB, PLUGIN, ROOT, free_port, start_sink, wait_for

SECONDS = 6

# (stage, symbol patterns, how): "max" takes the largest inclusive share of
# a matching symbol, "sum" adds the matching symbols' shares (distinct
# functions, none inside another), "self" adds their self time.
STAGES = [
    ("the request path on Tokio's workers", [r"comb::server::serve_request\b"], "max"),
    ("— the server span, started and ended",
     [r"comb::spans::start_server_span", r"comb::spans::end_server_span"], "sum"),
    ("— the plugin call", [r"comb::runtime::Runtime::invoke_until\b"], "max"),
    ("—— store, WASI and wasi:http contexts", [r"comb::runtime::Runtime::store\b"], "max"),
    ("—— instantiation", [r"InstancePre<T>::instantiate_async"], "max"),
    ("—— the guest's handle (canonical ABI and guest code)",
     [r"TypedFunc<Params,Return>::call_impl"], "max"),
    ("—— guest spans ended through the span API", [r"HostSpan>::drop"], "max"),
    ("—— the invocation span's end", [r"end_invocation_span"], "max"),
    ("—— dropping the store (pooling slot reset)",
     [r"drop_in_place<wasmtime::runtime::store::StoreInner"], "max"),
    ("— metrics", [r"Metrics::record_invocation", r"Metrics::record_request"], "sum"),
    ("— hyper reading the request head", [r"Conn<I,B,T>::poll_read_head"], "max"),
    ("— hyper writing the response", [r"Buffered<T,B>::poll_flush"], "max"),
    ("ending spans, all of them", [r"SpanRef::end_with_timestamp"], "max"),
    # Each row names the symbols of comb's own pipeline and of the SDK's
    # batch processor it replaced, so an older build (BENCH_COMB) reads too.
    ("— handed off (to the pipeline; before it, a clone to the page and the export queue)",
     [r"comb::telemetry::span_queue::SpanIntake::end", r"comb::telemetry::Both<A,B> as .*::on_end"],
     "max"),
    ("span pipeline thread (before it, the exporter's thread)",
     [r"comb::telemetry::pipeline::Worker<T,E>::run", r"BatchSpanProcessor::get_spans_and_export"],
     "max"),
    ("— OTLP encoding and sending, on Tokio's workers",
     [r"comb::telemetry::export_queue::in_chunks"], "max"),
    ("—— OTLP encoding", [r"comb::telemetry::otlp_http::export_request", r"build_trace_export_body"],
     "max"),
    ("comb's page recording", [r"comb::dashboard::Recorder::record", r"comb::dashboard::aggregate",
                               r"comb::dashboard::store::Store::add"], "max"),
    ("the allocator (self time)",
     [r"^_rjem_", r"^(__libc_)?(malloc|free|calloc|realloc)$", r"^_int_(malloc|free)",
      r"^malloc_consolidate$", r"^cfree"], "self"),
    ("`memmove` (self time)", [r"__memmove"], "self"),
]

# Compiled guest code (and wasmtime's trampolines) as perf names it from
# the map comb's --perf-map writes. Its frames do not unwind, so the
# request path's shares above miss most of it; its self time is exact.
GUEST_LINE = re.compile(r"^\s+([\d.]+)%\s+(?:perf-\d+\.map|\[JIT\][^\[]*)\s+\[.\]\s+(.*?)\s*$")

LINE = re.compile(r"^\s+([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*?)\s*$")


def stage_shares(report):
    """{stage: share %} from `perf report --children --stdio` text."""
    rows = [(float(c), float(s), sym) for c, s, sym in
            (m.groups() for m in map(LINE.match, report.splitlines()) if m)]
    shares = {}
    for stage, patterns, how in STAGES:
        found = [(c, s) for c, s, sym in rows if any(re.search(p, sym) for p in patterns)]
        if how == "max":
            shares[stage] = max((c for c, _ in found), default=0.0)
        elif how == "sum":
            shares[stage] = sum(max((c for c, s, sym in rows if re.search(p, sym)), default=0.0)
                                for p in patterns)
        else:
            shares[stage] = sum(s for _, s in found)
    return shares


def main():
    if not shutil.which("perf"):
        sys.exit("profile.py needs perf (Debian: apt-get install linux-perf)")
    scratch = tempfile.mkdtemp(prefix="comb-profile-")
    shutil.copy(PLUGIN, scratch)
    sink_process, sink = start_sink()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(RUST_LOG="warn", OTEL_EXPORTER_OTLP_ENDPOINT=sink)
    comb = subprocess.Popen(
        [COMB, "serve", "--plugins", scratch, "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{free_port()}", "--no-cache", "--perf-map"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    data = os.path.join(scratch, "perf.data")
    try:
        url = f"http://127.0.0.1:{port}/api/activities/home"
        wait_for(url)
        wrk = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{SECONDS + 8}s", url],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(4)
        subprocess.run(["perf", "record", "-F", "999", "--call-graph", "dwarf,16384",
                        "-p", str(comb.pid), "-o", data, "--", "sleep", str(SECONDS)],
                       capture_output=True, check=True)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk.communicate()[0]).group(1)
    finally:
        comb.send_signal(signal.SIGTERM)
        comb.wait(timeout=60)
        sink_process.terminate()
    # --no-inline: resolving inlined frames runs addr2line for minutes.
    report = subprocess.run(["perf", "report", "-i", data, "--children", "--no-inline",
                             "--sort", "symbol", "-g", "none", "--stdio"],
                            capture_output=True, text=True).stdout
    by_dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--no-inline",
                             "--sort", "dso,symbol", "-g", "none", "--stdio"],
                            capture_output=True, text=True).stdout
    shutil.rmtree(scratch, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(f"/tmp/perf-{comb.pid}.map")
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "bench", "profile.txt"), "w") as f:
        f.write(report)
    samples = re.search(r"# Samples: (\S+)", report)
    print(f"{COMB} traced to a sink, wrk -t2 -c32 ({rps} req/s while sampled), "
          f"perf {SECONDS} s, {samples.group(1) if samples else '?'} samples\n")
    print("| stage | share of comb's CPU |")
    print("|---|---|")
    for stage, share in stage_shares(report).items():
        print(f"| {stage} | {share:.1f} % |")
    guest = [(float(share), re.sub(r"::h[0-9a-f]{16}\b", "", symbol))
             for share, symbol in (m.groups() for m in map(GUEST_LINE.match, by_dso.splitlines()) if m)]
    print(f"| guest code (self time) | {sum(share for share, _ in guest):.1f} % |")
    for share, symbol in sorted(guest, reverse=True)[:8]:
        print(f"| — `{symbol[:90]}` | {share:.1f} % |")


if __name__ == "__main__":
    main()
