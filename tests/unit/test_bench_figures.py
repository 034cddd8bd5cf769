"""The arithmetic of `make bench`: slices merge into one figure, ratios pair slices in time."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from bench.ab import Measurement, environment, line, medians, schedule
from bench.run import (
    Row,
    Sample,
    cpu_seconds,
    free_ports,
    machine_times,
    process_tree,
    ratio_of,
    round_ratios,
    status_mb,
    stolen_share,
    table,
    tree_cpu_seconds,
    wait_delivered,
    wait_idle,
)


def test_slices_merge_calls_time_latencies_and_errors() -> None:
    first = Sample(3, 1.0, [0.003, 0.001, 0.002], {"UNAVAILABLE": 1})
    second = Sample(1, 2.0, [0.004], {"UNAVAILABLE": 2, "INTERNAL": 1})
    merged = Sample.merge([first, second])
    assert merged.calls == 4
    assert merged.seconds == 3.0
    assert merged.rps == pytest.approx(4 / 3)
    assert merged.latencies == [0.001, 0.002, 0.003, 0.004]
    assert merged.errors == {"UNAVAILABLE": 3, "INTERNAL": 1}


def test_percentiles_are_read_off_the_sorted_latencies() -> None:
    sample = Sample.merge([Sample(100, 1.0, [n / 1000 for n in range(100, 0, -1)], {})])
    assert sample.percentile_ms(0.5) == pytest.approx(51.0)
    assert sample.percentile_ms(0.99) == pytest.approx(100.0)


def test_an_empty_sample_has_no_rate_and_no_latency() -> None:
    empty = Sample.merge([])
    assert empty.rps == 0.0
    assert empty.percentile_ms(0.5) == 0.0


def test_the_ratio_is_all_our_calls_over_all_the_bare_servers_in_the_same_slices() -> None:
    ours = [Sample(300, 1.0, [], {}), Sample(500, 1.0, [], {})]
    bare = [Sample(1000, 1.0, [], {}), Sample(3000, 1.0, [], {})]
    assert ratio_of(Sample.merge(ours), Sample.merge(bare)) == pytest.approx(800 / 4000)
    assert ratio_of(Sample.merge(ours), Sample.merge([])) == 0.0


def test_each_round_pairs_its_own_two_slices_of_each() -> None:
    # Two rounds: the machine was twice as fast in the second, for both servers alike.
    ours = [Sample(n, 1.0, [], {}) for n in (300, 300, 600, 600)]
    bare = [Sample(n, 1.0, [], {}) for n in (1000, 1000, 2000, 2000)]
    assert round_ratios(ours, bare) == pytest.approx([0.3, 0.3])
    assert ratio_of(Sample.merge(ours), Sample.merge(bare)) == pytest.approx(0.3)


def test_the_table_shows_the_lowest_and_highest_rounds_ratio() -> None:
    row = Row("sqlite", "GetAgreement", 1000, 1, 2, {}, 100, 500, 0.8, 2000, 0.5, 0.5, True)
    row.round_ratios = [0.52, 0.47, 0.5]
    line = table([row]).splitlines()[1]
    assert "0.47–0.52" in line and line.endswith(" ok")


def test_steal_is_the_stolen_share_of_the_machines_time_and_merges_as_the_worst() -> None:
    assert stolen_share((10, 1000), (40, 1200)) == pytest.approx(0.15)
    assert stolen_share((10, 1000), (10, 1000)) == 0.0
    stolen, total = machine_times()
    assert 0 <= stolen <= total and total > 0
    merged = Sample.merge([Sample(1, 1.0, [], {}, steal=0.02), Sample(1, 1.0, [], {}, steal=0.3)])
    assert merged.steal == 0.3


def test_the_table_shows_the_worst_steal() -> None:
    row = Row("sqlite", "GetAgreement", 1000, 1, 2, {}, 100, 500, 0.8, 2000, 0.5, 0.5, True)
    row.steal = 0.34
    assert " 34% " in table([row]).splitlines()[1]


def test_waiting_for_idle_returns_once_a_busy_process_stops() -> None:
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 1\nwhile time.time() < end: pass"]
    )
    try:
        started = time.monotonic()
        wait_idle([busy.pid], timeout=10)
        waited = time.monotonic() - started
    finally:
        busy.kill()
        busy.wait()
    assert waited >= 0.5  # it waited for the loop to end rather than returning at once


def test_the_cost_per_call_counts_every_answered_call_and_the_server_time_of_each_slice() -> None:
    first = Sample(
        80, 4.0, [], {}, answered=100, cpu_seconds=0.05, main_thread_seconds=2.0, wall_seconds=5
    )
    second = Sample(
        150, 4.0, [], {}, answered=200, cpu_seconds=0.10, main_thread_seconds=4.5, wall_seconds=5
    )
    merged = Sample.merge([first, second])
    assert merged.answered == 300
    assert merged.cpu_us_per_call == pytest.approx(500.0)  # 0.15 s over 300 calls
    assert merged.main_thread_busy == pytest.approx(0.65)  # 6.5 s of a thread over 10 s


def test_a_slice_without_calls_costs_nothing_per_call() -> None:
    empty = Sample.merge([])
    assert empty.cpu_us_per_call == 0.0
    assert empty.main_thread_busy == 0.0


def test_cpu_time_is_read_for_a_process_and_for_its_main_thread() -> None:
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nend = time.time() + 0.6\nwhile time.time() < end: pass\n"
            "print('done', flush=True)\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert busy.stdout is not None
        assert busy.stdout.readline() == "done\n"  # spun for 0.6 s, now blocked on stdin
        process, main = cpu_seconds(busy.pid), cpu_seconds(busy.pid, busy.pid)
    finally:
        busy.kill()
        busy.wait()
    assert 0.3 <= main <= process


def test_waiting_for_delivery_lasts_until_the_count_is_reached() -> None:
    started = time.monotonic()

    def delivered() -> int:  # one SMS every 50 ms
        return int((time.monotonic() - started) / 0.05)

    lag = wait_delivered(delivered, 4)

    assert delivered() >= 4
    assert 0.15 <= lag < 5


def test_waiting_for_delivery_gives_up_after_its_timeout() -> None:
    lag = wait_delivered(lambda: 0, 1, timeout=0.1)

    assert 0.1 <= lag < 1


def test_a_servers_figures_include_the_processes_under_it() -> None:
    """The SMS sender helper runs under the server: its CPU and memory are the server's cost."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', "
            "'import sys, time\\nend = time.time() + 0.6\\nwhile time.time() < end: pass\\n"
            "print(1, flush=True)\\nsys.stdin.read()'], stdin=subprocess.PIPE, "
            "stdout=subprocess.PIPE, text=True)\n"
            "print(child.pid, flush=True)\n"
            "child.stdout.readline()\n"
            "print('done', flush=True)\n"
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline() == "done\n"  # the child spun for 0.6 s
        tree = process_tree(parent.pid)
        alone, together = cpu_seconds(parent.pid), tree_cpu_seconds(parent.pid)
        rss_child = status_mb(child, "VmRSS")
        rss_both = status_mb(parent.pid, "VmRSS")
    finally:
        parent.kill()
        parent.wait()
    assert tree == [parent.pid, child]
    assert together - alone >= 0.3
    assert rss_both > rss_child > 0


def test_an_ab_variant_is_settings_or_nothing() -> None:
    assert environment("-") == {}
    assert environment("PYTHONPATH=/tmp/a/src,ONBOARDING_SMS_SENDER_PROCESS=false") == {
        "PYTHONPATH": "/tmp/a/src",
        "ONBOARDING_SMS_SENDER_PROCESS": "false",
    }
    with pytest.raises(ValueError):
        environment("PYTHONPATH")


def test_ab_rounds_alternate_which_variant_goes_first() -> None:
    assert schedule(3) == ["a", "b", "b", "a", "a", "b"]


def test_ab_medians_are_per_variant() -> None:
    measured = [
        Measurement("a", 100.0, 10.0, 20.0, 1.0, 0.05),
        Measurement("b", 300.0, 30.0, 60.0, 3.0, 0.3),
        Measurement("a", 200.0, 20.0, 40.0, 2.0, 0.02),
        Measurement("a", 900.0, 90.0, 180.0, 9.0, 0.0),
    ]
    assert medians(measured, "a") == Measurement("a", 200.0, 20.0, 40.0, 2.0, 0.02)
    assert "steal  30%" in line(measured[1], "0: B")


def test_the_ports_of_one_stack_are_distinct_and_free() -> None:
    ports = free_ports(3)

    assert len(set(ports)) == 3
    for port in ports:  # each can be listened on at once
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
