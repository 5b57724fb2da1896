"""The benchmark load generator counts what the servers deliver (a smoke run, not a timing).

``benchmarks/loadgen.py`` counts fan-out deliveries and 64 KiB echoes by length
once their headers check out; these short runs against syncws' benchmark server
check the counts agree with what was published, so a miscounting shortcut
shows up in CI rather than as a wrong figure in the README.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import loadgen
import run

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("shortcut", [True, False])
def test_fanout_counts_every_delivery(shortcut: bool, monkeypatch: Any) -> None:
    monkeypatch.setattr(loadgen, "SUB_SHORTCUT", shortcut)
    subscribers, window, duration = 30, 8, 0.5
    with run.running_server("syncws") as (pid, port):
        result = loadgen.fanout(run.HOST, port, server_pid=pid, subscribers=subscribers,
                                size=64, window=window, duration=duration, procs=2)
    assert result["errors"] == 0
    complete = round(result["publishes/s"] * duration)  # reached every subscriber
    delivered = round(result["deliveries/s"] * duration)
    assert complete > 0
    # Each complete publish reached every subscriber; at most `window` more were in flight.
    assert complete * subscribers <= delivered <= (complete + window) * subscribers
    assert result["all p50 ms"] <= result["all p99 ms"]


def test_echo_64k_counts_every_echo() -> None:
    with run.running_server("syncws") as (pid, port):
        result = loadgen.echo(run.HOST, port, server_pid=pid, connections=4, in_flight=2,
                              size=65536, duration=0.5, procs=2)
    assert result["errors"] == 0
    assert result["msg/s"] > 0
    assert 0 < result["p50 ms"] <= result["p99 ms"]


def test_churn_counts_whole_sessions() -> None:
    # Each counted session got a 101, then the server's close frame, then its FIN.
    with run.running_server("syncws") as (pid, port):
        result = loadgen.churn(run.HOST, port, server_pid=pid, in_flight=4, duration=0.5,
                               procs=2)
    assert result["errors"] == 0
    assert result["conn/s"] > 0
    assert 0 < result["handshake p50 ms"] <= result["handshake p99 ms"]
