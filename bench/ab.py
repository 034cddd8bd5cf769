"""A/B: two variants of the server under the same load, for a change too small for `make bench`.

    python -m bench.ab --a PYTHONPATH=/tmp/old/src --b - [--rpc CreateAgreement]
        [--database sqlite] [--rounds 4] [--duration 8]

A variant is a comma-separated list of environment settings for `onboarding serve` (and its
migration): ``PYTHONPATH`` to another checkout's ``src`` (an absolute path) compares code
(``git worktree add`` makes one), ``ONBOARDING_…`` settings compare configuration, and ``-`` is
the code here as it is.

Each measurement starts a fresh server (with its own database and fakes), prepares it, and
drives one slice; the rounds go A B, B A, A B, … Two servers kept side by side and loaded in
turn seemed simpler, but one of the two slots was favoured by up to 10% whichever variant
held it (2026-12-02). It prints, per measurement and as medians: RPS, the server main thread's
CPU time per call, the server's with its SMS helper's, and the fake SMS gateway's, which shares
the cores. A shared machine's speed moves by tens of percent between slices: read the pairs,
not one figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.run import (
    Config,
    Load,
    cpu_seconds,
    deliveries,
    prepare,
    serving,
    wait_idle,
)


@dataclass(frozen=True)
class Measurement:
    variant: str
    rps: float
    main_us: float
    server_us: float
    gateway_us: float
    #: The share of the machine's time stolen by other guests during the measurement.
    steal: float = 0.0


def environment(variant: str) -> dict[str, str]:
    """``"K=V,K2=V2"`` as settings; ``"-"`` as none."""
    if variant.strip() == "-":
        return {}
    settings = {}
    for item in variant.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"not NAME=VALUE: {item!r}")
        settings[name.strip()] = value
    return settings


def schedule(rounds: int) -> list[str]:
    """Which variant each measurement runs: A B, B A, A B, …"""
    order: list[str] = []
    for number in range(rounds):
        order.extend(("a", "b") if number % 2 == 0 else ("b", "a"))
    return order


def medians(measurements: list[Measurement], variant: str) -> Measurement:
    mine = [m for m in measurements if m.variant == variant]
    return Measurement(
        variant,
        statistics.median(m.rps for m in mine),
        statistics.median(m.main_us for m in mine),
        statistics.median(m.server_us for m in mine),
        statistics.median(m.gateway_us for m in mine),
        statistics.median(m.steal for m in mine),
    )


def line(m: Measurement, label: str) -> str:
    return (
        f"{label:<10} {m.rps:8.1f} rps  main {m.main_us:6.0f} µs  server {m.server_us:6.0f} µs"
        f"  gateway {m.gateway_us:5.0f} µs  steal {m.steal:4.0%}"
    )


def measure(load: Load, config: Config, variant: str, env: dict[str, str], rpc: str) -> Measurement:
    database = config.databases[0]
    with tempfile.TemporaryDirectory(prefix="onboarding-ab-") as tmp:
        with serving(database, Path(tmp), env) as stack:
            references, confirmations = prepare(stack.address, stack.sink_port)
            server, gateway = stack.server.pid, stack.sink.pid
            wait_idle([server, gateway])
            main_before, gateway_before = cpu_seconds(server, server), cpu_seconds(gateway)
            delivered = deliveries(rpc, stack.sink_port)
            sample = load.slice(
                stack.address,
                rpc,
                config.duration,
                server,
                [server, gateway],
                delivered,
                references=references,
                confirmations=confirmations,
            )
            calls = max(sample.answered, 1)
            return Measurement(
                variant,
                sample.rps,
                (cpu_seconds(server, server) - main_before) / calls * 1e6,
                sample.cpu_us_per_call,
                (cpu_seconds(gateway) - gateway_before) / calls * 1e6,
                sample.steal,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="variant A: NAME=VALUE,… or -")
    parser.add_argument("--b", required=True, help="variant B: NAME=VALUE,… or -")
    parser.add_argument("--rpc", default="CreateAgreement")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--callers", type=int, default=32)
    args = parser.parse_args(argv)
    variants = {"a": args.a, "b": args.b}
    settings = {key: environment(value) for key, value in variants.items()}
    config = Config(
        args.duration, 1.0, args.processes, args.callers, [args.database], Path("/dev/null")
    )
    measurements: list[Measurement] = []
    with Load(config) as load:
        for number, key in enumerate(schedule(args.rounds)):
            m = measure(load, config, key, settings[key], args.rpc)
            measurements.append(m)
            print(line(m, f"{number // 2}: {key.upper()}"), flush=True)
    for key, variant in variants.items():
        print(line(medians(measurements, key), f"median {key.upper()}"), f"  ({variant})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
