"""`make bench`: our RPCs against a bare grpc.aio server, on SQLite and PostgreSQL.

    python -m bench.run [--duration 20] [--rounds 4] [--databases sqlite,postgres] [--out FILE]

For each database it starts, as separate processes: the bare server (grpc.health.v1 only), a
fake SMS gateway, a fake service.nalog.ru and `onboarding serve`. It drives each with the same
closed-loop load (client processes × callers), and prints RPS, p50, p99, the server's peak RSS
and CPU time per call (each with its SMS sender helper's) and how busy its main thread was,
with each RPS as a ratio to the bare server's. Ratios, not absolute numbers, are what carry
from one machine to another.

A shared machine's speed drifts by tens of percent within minutes, so each RPC is measured in
step with the bare server, in rounds of bare, ours, ours, bare (``--rounds``, each slice the
duration over twice the rounds): the ratio is our calls over the bare server's calls in all
the slices, and a drift that is steady over a round cancels out. The speed also jumps (the
bare server made 3,761 and 1,851 calls a second two minutes apart, 2026-12-02): more, shorter
rounds average such jumps out, and the table shows the lowest and highest round's ratio, so
that a jump is seen rather than taken for a change. Before each slice both servers are left
to go idle, so that work one left behind (an SMS backlog) is not charged to the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import grpc

from bench.load import PERSON, Plan, run_plan

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POSTGRES_ADMIN = os.environ.get(
    "ONBOARDING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
RPCS = ["CreateAgreement", "ConfirmOtp", "GetAgreement", "FindInn (cached)"]
#: Issue 7's targets: RPS as a share of the bare server's, per database.
TARGETS = {
    "sqlite": {
        "GetAgreement": 0.5,
        "FindInn (cached)": 0.5,
        "CreateAgreement": 0.3,
        "ConfirmOtp": 0.3,
    },
    "postgres": {
        "GetAgreement": 0.35,
        "FindInn (cached)": 0.35,
        "CreateAgreement": 0.2,
        "ConfirmOtp": 0.2,
    },
}
POOL = 2000


@dataclass
class Row:
    database: str
    rpc: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    peak_rss_mb: float
    #: The server's CPU time (all its threads, and its SMS helper's) per call answered,
    #: warm-up and the work a slice left behind (an SMS backlog) included.
    cpu_us_per_call: float
    #: How busy the server's main thread (the event loop's, which runs all our Python) was
    #: during the slices: 1.0 is a whole core.
    main_thread_busy: float
    #: The bare server's RPS in the slices paired with this row's (None on the bare rows).
    bare_rps: float | None = None
    ratio: float | None = None
    target: float | None = None
    met: bool | None = None
    #: Each round's own ratio: how far the machine's jumps moved it.
    round_ratios: list[float] = field(default_factory=list)
    #: The worst steal of the row's slices, ours and the bare server's (see ``Sample.steal``).
    steal: float = 0.0


@dataclass
class Config:
    duration: float
    warmup: float
    processes: int
    callers: int
    databases: list[str]
    out: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Rounds of bare, ours, ours, bare per RPC; each slice lasts duration / (2 × rounds).
    rounds: int = 4


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Ports free now and distinct: each is held until all are chosen (ports chosen one at a
    time can repeat, and then a fake's port is another process's)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[str]:
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE if log is None else out,
        stderr=out,
        text=True,
    )


def wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if "ready" not in line and "fake service.nalog.ru" not in line:
        raise RuntimeError(f"did not start: {line!r}")


def wait_serving(address: str, timeout: float = 30) -> None:
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    finally:
        channel.close()


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_tree(pid: int) -> list[int]:
    """The process and every process under it: the server and its SMS sender helper."""
    tree, unseen = [], [pid]
    while unseen:
        current = unseen.pop()
        tree.append(current)
        with suppress(OSError):  # gone meanwhile
            for task in Path(f"/proc/{current}/task").iterdir():
                unseen.extend(int(child) for child in (task / "children").read_text().split())
    return tree


def status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status (VmHWM, VmRSS) of the process and those under it,
    summed: the helper's memory is the server's cost too."""
    total = 0.0
    for member in process_tree(pid):
        with suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1]) / 1024
    return total


def peak_rss_mb(pid: int) -> float:
    return status_mb(pid, "VmHWM")


@dataclass
class Sample:
    """What the load made of one slice: every answered call's latency, and errors by code."""

    calls: int
    seconds: float
    latencies: list[float]
    errors: dict[str, int]
    #: Calls answered from the start of the warm-up to the end, for the cost per call.
    answered: int = 0
    #: The server's CPU time (its helper's too) over the slice and what it left behind.
    cpu_seconds: float = 0.0
    #: Its main thread's CPU time over the slice, and the slice's wall time.
    main_thread_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: The share of the machine's CPU time the hypervisor gave to other guests during the
    #: slice (steal); merged, the worst slice's.
    steal: float = 0.0

    @staticmethod
    def merge(samples: list[Sample]) -> Sample:
        errors: dict[str, int] = {}
        for sample in samples:
            for code, count in sample.errors.items():
                errors[code] = errors.get(code, 0) + count
        return Sample(
            sum(s.calls for s in samples),
            sum(s.seconds for s in samples),
            sorted(x for s in samples for x in s.latencies),
            errors,
            sum(s.answered for s in samples),
            sum(s.cpu_seconds for s in samples),
            sum(s.main_thread_seconds for s in samples),
            sum(s.wall_seconds for s in samples),
            max((s.steal for s in samples), default=0.0),
        )

    @property
    def rps(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu_seconds / self.answered * 1e6 if self.answered else 0.0

    @property
    def main_thread_busy(self) -> float:
        return self.main_thread_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def percentile_ms(self, share: float) -> float:
        if not self.latencies:
            return 0.0
        return self.latencies[min(len(self.latencies) - 1, int(len(self.latencies) * share))] * 1000


class Load:
    """The client processes, started once and reused for every slice."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._pool = ProcessPoolExecutor(config.processes, mp_context=get_context("spawn"))

    def __enter__(self) -> Load:
        # Start every client process now: one spawned during a slice would start late and
        # leave part of that slice with fewer callers than the others.
        list(self._pool.map(time.sleep, [0.5] * self._config.processes))
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown()

    def slice(
        self,
        address: str,
        rpc: str,
        seconds: float,
        server: int,
        quiet: list[int],
        delivered: Callable[[], int] | None = None,
        **data: Any,
    ) -> Sample:
        """One slice against the server at ``address`` (process ``server``), then a wait until
        every process in ``quiet`` is idle, so that the work the slice left behind is done
        and charged to it.

        With ``delivered`` (how many SMS the gateway has received), every call answered OK is
        owed one SMS, and the slice lasts until the last of them has reached the gateway: a
        server whose SMS fall behind its answers is not credited with answers it cannot
        sustain."""
        cpu_before, main_before = tree_cpu_seconds(server), cpu_seconds(server, server)
        machine_before = machine_times()
        sent_before = delivered() if delivered is not None else 0
        started = time.monotonic()
        plan = Plan(
            address=address,
            rpc=rpc,
            callers=self._config.callers,
            warmup=self._config.warmup,
            duration=seconds,
            references=data.get("references", []),
            confirmations=data.get("confirmations", []),
        )
        results = list(self._pool.map(run_plan, [plan] * self._config.processes))
        owed = sum(r["succeeded"] for r in results)
        lag = wait_delivered(delivered, sent_before + owed) if delivered is not None else 0.0
        wall = time.monotonic() - started
        main = cpu_seconds(server, server) - main_before
        steal = stolen_share(machine_before, machine_times())
        wait_idle(quiet)
        merged = Sample.merge(
            [
                Sample(len(r["latencies"]), 0.0, r["latencies"], r["errors"], r["answered"])
                for r in results
            ]
        )
        # The processes ran side by side: their calls share one slice of time.
        return replace(
            merged,
            seconds=seconds + lag,
            cpu_seconds=tree_cpu_seconds(server) - cpu_before,
            main_thread_seconds=main,
            wall_seconds=wall,
            steal=steal,
        )


def wait_delivered(delivered: Callable[[], int], total: int, timeout: float = 60.0) -> float:
    """Seconds until ``delivered()`` reaches ``total``."""
    started = time.monotonic()
    while delivered() < total and time.monotonic() - started < timeout:
        time.sleep(0.01)
    return time.monotonic() - started


def sms_received(sink_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/received") as reply:
        return int(reply.read())


def deliveries(rpc: str, sink_port: int) -> Callable[[], int] | None:
    """What a slice of ``rpc`` waits for after its last answer: a CreateAgreement counts once
    its SMS has reached the gateway (see ``Load.slice``)."""
    return partial(sms_received, sink_port) if rpc == "CreateAgreement" else None


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU time (user and system) of a process, or of one of its threads."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_times() -> tuple[int, int]:
    """The machine's stolen and total CPU time so far, in ticks (``/proc/stat``; 0, 0 where
    there is none)."""
    with suppress(OSError):
        ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)
    return 0, 0


def stolen_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of the processes under it (the server's SMS helper)."""
    total = 0.0
    for member in process_tree(pid):
        with suppress(OSError):
            total += cpu_seconds(member)
    return total


def wait_idle(pids: list[int], *, share: float = 0.05, timeout: float = 30.0) -> None:
    """Until each process uses less than ``share`` of a core over a quarter second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [tree_cpu_seconds(pid) for pid in pids]
        time.sleep(0.25)
        if all(
            tree_cpu_seconds(pid) - b < share * 0.25 for pid, b in zip(pids, before, strict=True)
        ):
            return


@contextmanager
def bare_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    server = start([sys.executable, "-m", "bench.bare_server", str(port)])
    try:
        wait_ready(server)
        yield f"127.0.0.1:{port}", server
    finally:
        stop(server)


async def _create_postgres_database() -> str:
    import asyncpg

    name = f"onboarding_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def _drop_postgres_database(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


def prepare(address: str, sink_port: int) -> tuple[list[str], list[tuple[str, str]]]:
    """A pool of agreements with their codes, and the INN answer stored for PERSON."""
    from onboarding.agreement.v1 import agreement_pb2 as apb
    from onboarding.agreement.v1 import agreement_pb2_grpc as agrpc
    from onboarding.inn.v1 import inn_pb2 as ipb
    from onboarding.inn.v1 import inn_pb2_grpc as igrpc

    async def run() -> tuple[list[str], dict[str, str]]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agrpc.AgreementServiceStub(channel)
            phones = [f"+7903{n:07d}" for n in random.sample(range(10**7), POOL)]
            slots = asyncio.Semaphore(32)

            async def create(phone: str) -> tuple[str, str]:
                async with slots:
                    reply = await stub.CreateAgreement(
                        apb.CreateAgreementRequest(id_hash="bench-pool", phone=phone)
                    )
                    return reply.agreement.reference, phone

            made = await asyncio.gather(*(create(p) for p in phones))
            inn = igrpc.InnServiceStub(channel)
            found = await inn.FindInn(ipb.FindInnRequest(request_id="bench-warm", **PERSON))
            assert found.lookup.status == ipb.INN_LOOKUP_STATUS_FOUND, found
            return [r for r, _ in made], dict(made)

    references, phone_of = asyncio.run(run())
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/codes") as reply:
            codes = json.loads(reply.read())
        if all(phone_of[r] in codes for r in references) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return references, [(r, codes[phone_of[r]]) for r in references if phone_of[r] in codes]


@dataclass
class Stack:
    address: str
    sink_port: int
    server: subprocess.Popen[str]
    sink: subprocess.Popen[str]


@contextmanager
def serving(database: str, work: Path, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """`onboarding serve` on a new database of the kind, with a fake SMS gateway and a fake
    service.nalog.ru, each a process of its own; all stopped (and the database dropped) after."""
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{work / f'{database}-{secrets.token_hex(3)}.db'}"
    else:
        url = asyncio.run(_create_postgres_database())
    sink_port, nalog_port, port = free_ports(3)
    sink = start([sys.executable, "-m", "bench.sms_sink", str(sink_port)])
    nalog = start([sys.executable, "-m", "tests.fakes.nalog", "--port", str(nalog_port)])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")},
        "ONBOARDING_DATABASE_URL": url,
        "ONBOARDING_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "ONBOARDING_GRPC_PORT": str(port),
        "ONBOARDING_SMS_GATEWAY_URL": f"http://127.0.0.1:{sink_port}/sms",
        "ONBOARDING_NALOG_BASE_URL": f"http://127.0.0.1:{nalog_port}",
        "ONBOARDING_NALOG_MAX_RPS": "100",
        "ONBOARDING_NALOG_POLL_INTERVAL_SECONDS": "0.01",
        "ONBOARDING_METRICS_PORT": "0",
        "ONBOARDING_LOG_FORMAT": "json",
        "ONBOARDING_OTP_MAX_SENDS_PER_PHONE_PER_HOUR": "1000",
        **(extra_env or {}),
    }
    server = None
    try:
        wait_ready(sink)
        wait_ready(nalog)
        migrated = subprocess.run(
            [str(BIN / "onboarding"), "migrate"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if migrated.returncode:
            raise RuntimeError(migrated.stderr)
        server = start(
            [str(BIN / "onboarding"), "serve"], env=env, log=work / f"server-{database}.log"
        )
        address = f"127.0.0.1:{port}"
        wait_serving(address)
        yield Stack(address, sink_port, server, sink)
    finally:
        if server is not None:
            stop(server)
        stop(sink)
        stop(nalog)
        if database == "postgres":
            asyncio.run(_drop_postgres_database(url))


#: One round of an RPC's measurement: a drift steady over it cancels out.
ROUND = ("bare", "ours", "ours", "bare")


def ratio_of(ours: Sample, bare: Sample) -> float:
    """Our calls a second over the bare server's."""
    return ours.rps / bare.rps if bare.rps else 0.0


def round_ratios(ours: list[Sample], bare: list[Sample]) -> list[float]:
    """Each round's ratio, from the slices in the order measured (two of each per round)."""
    per = ROUND.count("ours")
    return [
        ratio_of(Sample.merge(ours[n : n + per]), Sample.merge(bare[n : n + per]))
        for n in range(0, len(ours), per)
    ]


def section(config: Config, load: Load, database: str, work: Path) -> list[Row]:
    """The bare row and our rows for one database, each RPC measured in rounds of
    bare-ours-ours-bare."""
    piece = config.duration / (2 * config.rounds)
    with (
        bare_server() as (bare_address, bare),
        serving(database, work, config.extra_env) as stack,
    ):
        references, confirmations = prepare(stack.address, stack.sink_port)
        data = {"references": references, "confirmations": confirmations}
        quiet = [bare.pid, stack.server.pid, stack.sink.pid]
        floor: list[Sample] = []
        rows = []
        for rpc in RPCS:
            slices: dict[str, list[Sample]] = {"bare": [], "ours": []}
            for who in ROUND * config.rounds:
                wait_idle(quiet)
                if who == "bare":
                    slices[who].append(
                        load.slice(bare_address, "Health/Check", piece, bare.pid, quiet)
                    )
                else:
                    delivered = deliveries(rpc, stack.sink_port)
                    slices[who].append(
                        load.slice(
                            stack.address, rpc, piece, stack.server.pid, quiet, delivered, **data
                        )
                    )
            ours, paired = Sample.merge(slices["ours"]), Sample.merge(slices["bare"])
            floor.extend(slices["bare"])
            ratio = ratio_of(ours, paired)
            rounds = round_ratios(slices["ours"], slices["bare"])
            target = TARGETS[database][rpc]
            rows.append(
                Row(
                    database,
                    rpc,
                    ours.rps,
                    ours.percentile_ms(0.5),
                    ours.percentile_ms(0.99),
                    ours.errors,
                    peak_rss_mb(stack.server.pid),
                    ours.cpu_us_per_call,
                    ours.main_thread_busy,
                    bare_rps=paired.rps,
                    ratio=ratio,
                    target=target,
                    met=ratio >= target and not ours.errors,
                    round_ratios=rounds,
                    steal=max(ours.steal, paired.steal),
                )
            )
        all_bare = Sample.merge(floor)
        bare_row = Row(
            database,
            "Health/Check (bare)",
            all_bare.rps,
            all_bare.percentile_ms(0.5),
            all_bare.percentile_ms(0.99),
            all_bare.errors,
            peak_rss_mb(bare.pid),
            all_bare.cpu_us_per_call,
            all_bare.main_thread_busy,
            steal=all_bare.steal,
        )
        return [bare_row, *rows]


def table(rows: list[Row]) -> str:
    lines = [
        f"{'database':<9} {'rpc':<20} {'rps':>8} {'bare':>6} {'ratio':>6} {'target':>6} "
        f"{'rounds':>9} {'p50 ms':>7} {'p99 ms':>7} {'rss MB':>7} {'cpu µs':>6} {'main':>5} "
        f"{'steal':>5} errors",
    ]
    for r in rows:
        bare = f"{r.bare_rps:.0f}" if r.bare_rps is not None else ""
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "1.00"
        spread = f"{min(r.round_ratios):.2f}–{max(r.round_ratios):.2f}" if r.round_ratios else ""
        target = f"{r.target:.2f}" if r.target is not None else ""
        mark = "" if r.met is None else (" ok" if r.met else " MISSED")
        lines.append(
            f"{r.database:<9} {r.rpc:<20} {r.rps:>8.0f} {bare:>6} {ratio:>6} {target:>6} "
            f"{spread:>9} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.peak_rss_mb:>7.1f} "
            f"{r.cpu_us_per_call:>6.0f} {r.main_thread_busy:>5.0%} {r.steal:>5.0%} "
            f"{r.errors or ''}{mark}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=Config.rounds)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    config = Config(
        args.duration,
        args.warmup,
        args.processes,
        args.callers,
        args.databases.split(","),
        args.out,
        rounds=args.rounds,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="onboarding-bench-") as tmp, Load(config) as load:
        for database in config.databases:
            rows.extend(section(config, load, database, Path(tmp)))
            print(table(rows), flush=True)
            print(flush=True)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "load": {
            "processes": config.processes,
            "callers": config.callers,
            "duration": config.duration,
            "order": f"per RPC: {config.rounds} rounds of bare, ours, ours, bare; "
            f"{config.duration / (2 * config.rounds):g} s each",
        },
        "rows": [asdict(r) for r in rows],
    }
    config.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"written to {config.out}")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
