"""Run benchmark scenarios against syncws and its Python peers, alternately.

    python benchmarks/run.py --scenario echo --servers syncws,websockets-sync,aiohttp \\
        --pairs 3 --duration 5

Each run starts the server afresh as a subprocess on a free 127.0.0.1 port,
drives it with the multi-process load generator (``loadgen.py``), and stops
it. Rounds run every server in turn (A, B, A, B, ...); the table shows each
metric's median and the median over rounds of the ratio syncws/peer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import loadgen

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"

SERVERS: dict[str, str] = {
    "syncws": "syncws_server.py",
    "websockets-sync": "websockets_sync.py",
    "websockets-asyncio": "websockets_asyncio.py",
    "aiohttp": "aiohttp_server.py",
    "flask-sock": "flask_sock_server.py",
}

# kind, parameters, the primary metric and whether higher is better.
SCENARIOS: dict[str, dict[str, Any]] = {
    "echo": {"kind": "echo", "connections": 50, "in_flight": 1, "size": 64},
    "echo-pipelined": {"kind": "echo", "connections": 50, "in_flight": 16, "size": 64},
    "echo-64k": {"kind": "echo", "connections": 8, "in_flight": 1, "size": 65536},
    "fanout-200": {"kind": "fanout", "subscribers": 200, "size": 64, "window": 8},
    "fanout-1000": {"kind": "fanout", "subscribers": 1000, "size": 64, "window": 8},
    "connect": {"kind": "churn", "in_flight": 16},
    "idle-1000": {"kind": "idle", "connections": 1000},
    "idle-5000": {"kind": "idle", "connections": 5000},
    "idle-10000": {"kind": "idle", "connections": 10000},
}
PRIMARY = {"echo": ("msg/s", True), "fanout": ("deliveries/s", True),
           "churn": ("conn/s", True), "idle": ("KB/conn", False)}
SECONDARY = {"echo": "p99 ms", "fanout": "all p99 ms", "churn": "handshake p99 ms",
             "idle": "threads"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def parse_server(spec: str) -> tuple[str, int | None]:
    """``"aiohttp"`` -> ("aiohttp", None); ``"syncws@1"`` -> ("syncws", 1): pinned to CPU 1."""
    name, at, cpu = spec.partition("@")
    if name not in SERVERS or (at and not cpu.isdigit()):
        raise ValueError(f"unknown server {spec!r}")
    return name, int(cpu) if at else None


@contextlib.contextmanager
def running_server(spec: str, *, startup_timeout: float = 20.0) -> Iterator[tuple[int, int]]:
    """Start server ``spec`` (a name, ``@CPU`` to pin it) on a free port; yield (pid, port)."""
    name, cpu = parse_server(spec)
    port = free_port()
    script = HERE / "servers" / SERVERS[name]
    # Every thread of the server on one CPU: no hand-off between its threads
    # crosses cores (the load generator keeps running anywhere).
    pin = None if cpu is None else partial(os.sched_setaffinity, 0, {cpu})
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, str(script), "--host", HOST, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=pin)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read()[-2000:].decode(errors="replace")
                    raise RuntimeError(f"{name} did not start (exit {proc.returncode}):\n{tail}")
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield proc.pid, port
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def run_one(server: str, scenario: str, *, duration: float, procs: int | None,
            window: int | None = None) -> dict[str, float]:
    params = dict(SCENARIOS[scenario])
    kind = params.pop("kind")
    if window is not None and kind == "fanout":
        params["window"] = window
    with running_server(server) as (pid, port):
        time.sleep(0.2)
        if kind == "echo":
            return loadgen.echo(HOST, port, server_pid=pid, duration=duration,
                                procs=procs or 2, **params)
        if kind == "fanout":
            return loadgen.fanout(HOST, port, server_pid=pid, duration=duration,
                                  procs=procs or 2, **params)
        if kind == "churn":
            return loadgen.churn(HOST, port, server_pid=pid, duration=duration,
                                 procs=procs or 2, **params)
        n = params["connections"]
        return loadgen.idle(HOST, port, server_pid=pid, connections=n,
                            procs=procs or max(1, -(-n // 2500)))


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


# A run counts as quiet when the rest of the machine used at most this many cores.
QUIET_OTHER_CPU = 0.10


def print_table(scenario: str, servers: list[str],
                rounds: dict[str, list[dict[str, float] | None]]) -> dict[str, Any]:
    """Print medians and syncws/peer ratios; ``rounds[name][i]`` is round i (None: failed)."""
    kind = SCENARIOS[scenario]["kind"]
    primary, higher_better = PRIMARY[kind]
    secondary = SECONDARY[kind]
    runs = {name: [r for r in rounds[name] if r is not None] for name in servers}
    metrics: list[str] = []
    for name in servers:
        for r in runs[name]:
            metrics += [m for m in r if m not in metrics]
    header = ["server", "runs", *metrics,
              f"{primary} syncws/peer", f"{secondary} syncws/peer"]
    rows = []
    summary: dict[str, Any] = {}
    quiet_notes = []
    # Ratios are to the first syncws run in the list (plain or pinned).
    base_name = next((name for name in servers if parse_server(name)[0] == "syncws"), "")
    base = rounds.get(base_name, [])
    for name in servers:
        ok = runs[name]
        med = {m: statistics.median([r[m] for r in ok if m in r]) if ok else float("nan")
               for m in metrics}
        ratios: list[float] = []
        ratios2: list[float] = []
        quiet: list[float] = []
        if name != base_name:
            # Same round only: a ratio compares runs made one after the other.
            for a, b in zip(base, rounds[name], strict=False):
                if a is None or b is None:
                    continue
                if b.get(primary):
                    ratios.append(a[primary] / b[primary])
                    if max(a.get("other cpu", 0.0), b.get("other cpu", 0.0)) <= QUIET_OTHER_CPU:
                        quiet.append(a[primary] / b[primary])
                if b.get(secondary):
                    ratios2.append(a[secondary] / b[secondary])
            if ratios and "other cpu" in metrics:
                quiet_notes.append(
                    f"{name}: {len(quiet)} of {len(ratios)} rounds quiet"
                    + (f", median ratio {fmt(statistics.median(quiet))}" if quiet else ""))
        ratio = statistics.median(ratios) if ratios else float("nan")
        ratio2 = statistics.median(ratios2) if ratios2 else float("nan")
        summary[name] = {"median": med, "ratio": ratio, "ratio_secondary": ratio2,
                         "ratio_quiet": statistics.median(quiet) if quiet else None,
                         "runs": ok}
        rows.append([name, str(len(ok)), *(fmt(med[m]) for m in metrics),
                     fmt(ratio), fmt(ratio2)])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    better = "higher" if higher_better else "lower"
    print(f"\n## {scenario}: {json.dumps(SCENARIOS[scenario])}  ({primary}: {better} is better)")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    if quiet_notes:
        print(f"\nQuiet rounds (other cpu <= {QUIET_OTHER_CPU} core in both runs), "
              f"{primary} syncws/peer: " + "; ".join(quiet_notes))
    sys.stdout.flush()
    return summary


def run_scenario(scenario: str, servers: list[str], *, pairs: int, duration: float,
                 procs: int | None, window: int | None = None,
                 verbose: bool = True) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, float] | None]] = {name: [] for name in servers}
    for i in range(pairs):
        for name in servers:
            t0 = time.monotonic()
            try:
                result = run_one(name, scenario, duration=duration, procs=procs, window=window)
            except Exception as exc:
                print(f"[{scenario} #{i + 1}] {name}: FAILED: {exc}", file=sys.stderr, flush=True)
                rounds[name].append(None)
                continue
            rounds[name].append(result)
            if verbose:
                shown = ", ".join(f"{k}={fmt(v)}" for k, v in result.items())
                print(f"[{scenario} #{i + 1}] {name}: {shown} ({time.monotonic() - t0:.1f} s)",
                      file=sys.stderr, flush=True)
    return print_table(scenario, servers, rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="echo",
                        help=f"comma-separated, or 'all': {', '.join(SCENARIOS)}")
    parser.add_argument("--servers", default="syncws,websockets-sync",
                        help=f"comma-separated, or 'all': {', '.join(SERVERS)}; "
                             "NAME@CPU runs that server pinned to one CPU (syncws@1)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds over all servers")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--procs", type=int, default=None,
                        help="load processes (default 2; idle: one per 2,500 connections)")
    parser.add_argument("--window", type=int, default=None,
                        help="fan-out: publishes not yet delivered to all subscribers (default 8)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    scenarios = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    servers = list(SERVERS) if args.servers == "all" else args.servers.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    for s in servers:
        try:
            _, cpu = parse_server(s)
        except ValueError as exc:
            parser.error(str(exc))
        if cpu is not None and cpu not in os.sched_getaffinity(0):
            parser.error(f"{s}: CPU {cpu} is not one this process may use")
    if not 1 <= args.pairs <= 50 or not 0.5 <= args.duration <= 120:
        parser.error("--pairs must be 1..50 and --duration 0.5..120 s")
    from syncws._frames import SPEEDUPS

    print(f"# machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"pairs={args.pairs}, duration={args.duration} s, "
          f"syncws C masking (syncws[speedups]): {'on' if SPEEDUPS else 'off'}", flush=True)
    results = {s: run_scenario(s, servers, pairs=args.pairs, duration=args.duration,
                               procs=args.procs, window=args.window) for s in scenarios}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
