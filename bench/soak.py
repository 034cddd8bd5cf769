"""`make soak`: mixed traffic against one server for a while; memory must stay flat.

    python -m bench.soak [--minutes 10] [--database sqlite|postgres]

Every RPC of both services, in a mix, from client processes in a closed loop. The server's RSS
(with its SMS sender helper's) is sampled every 5 s; the run passes when RSS at the end is less
than 10% above RSS after the first minute, and no call failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import grpc

from bench.load import PERSON
from bench.run import ROOT, serving, status_mb


def rss_mb(pid: int) -> float:
    """The server's RSS with its SMS sender helper's."""
    return status_mb(pid, "VmRSS")


async def _traffic(address: str, seconds: float, callers: int) -> dict[str, Any]:
    from onboarding.agreement.v1 import agreement_pb2 as apb
    from onboarding.agreement.v1 import agreement_pb2_grpc as agrpc
    from onboarding.inn.v1 import inn_pb2 as ipb
    from onboarding.inn.v1 import inn_pb2_grpc as igrpc

    rng = random.Random()
    calls = 0
    errors: dict[str, int] = {}
    references: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        agreements = agrpc.AgreementServiceStub(channel)
        inn = igrpc.InnServiceStub(channel)
        stop_at = time.monotonic() + seconds

        async def one() -> None:
            kind = rng.random()
            if kind < 0.25 or not references:
                reply = await agreements.CreateAgreement(
                    apb.CreateAgreementRequest(
                        id_hash=f"soak-{rng.randrange(1000)}",
                        phone=f"+7916{rng.randrange(10**7):07d}",
                        request_id=uuid.uuid4().hex,
                    )
                )
                references.append(reply.agreement.reference)
                del references[:-5000]
            elif kind < 0.55:
                await agreements.GetAgreement(
                    apb.GetAgreementRequest(reference=rng.choice(references))
                )
            elif kind < 0.65:
                await agreements.ListAgreements(
                    apb.ListAgreementsRequest(id_hash=f"soak-{rng.randrange(1000)}", page_size=10)
                )
            elif kind < 0.75:
                # A wrong code: counted, answered OTP_INVALID or OTP_ATTEMPTS_EXHAUSTED.
                try:
                    await agreements.ConfirmOtp(
                        apb.ConfirmOtpRequest(reference=rng.choice(references), code="000000")
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() not in (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.FAILED_PRECONDITION,
                    ):
                        raise
            elif kind < 0.8:
                await agreements.RevokeAgreement(
                    apb.RevokeAgreementRequest(reference=rng.choice(references))
                )
            else:
                person = dict(PERSON)
                if rng.random() < 0.1:  # a new person now and then: an upstream call
                    person["document_number"] = f"{rng.randrange(10**6):06d}"
                await inn.FindInn(
                    ipb.FindInnRequest(request_id=uuid.uuid4().hex, **person), timeout=10
                )

        async def caller() -> None:
            nonlocal calls
            while time.monotonic() < stop_at:
                try:
                    await one()
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] = errors.get(error.code().name, 0) + 1
                calls += 1

        await asyncio.gather(*(caller() for _ in range(callers)))
    return {"calls": calls, "errors": errors}


def traffic(args: tuple[str, float, int]) -> dict[str, Any]:
    return asyncio.run(_traffic(*args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    with (
        tempfile.TemporaryDirectory(prefix="onboarding-soak-") as tmp,
        serving(args.database, Path(tmp)) as stack,
    ):
        samples: list[tuple[float, float]] = []
        began = time.monotonic()
        with ProcessPoolExecutor(args.processes, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(traffic, (stack.address, seconds, args.callers))
                for _ in range(args.processes)
            ]
            while not all(f.done() for f in futures):
                samples.append((time.monotonic() - began, rss_mb(stack.server.pid)))
                time.sleep(5)
            results = [f.result() for f in futures]
    calls = sum(r["calls"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    after_first_minute = next(
        (rss for t, rss in samples if t >= min(60, seconds / 2)), samples[0][1]
    )
    final = samples[-1][1]
    growth = (final - after_first_minute) / after_first_minute
    report = {
        "database": args.database,
        "minutes": args.minutes,
        "calls": calls,
        "rps": calls / seconds,
        "errors": errors,
        "rss_after_first_minute_mb": round(after_first_minute, 1),
        "rss_final_mb": round(final, 1),
        "rss_peak_mb": round(max(r for _, r in samples), 1),
        "rss_growth": round(growth, 4),
        "samples": [(round(t, 1), round(r, 1)) for t, r in samples],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    passed = growth < 0.10 and not errors
    print(
        f"soak {args.database} {args.minutes:g} min: {calls} calls ({report['rps']:.0f}/s), "
        f"errors {errors or 'none'}, RSS {after_first_minute:.1f} MB after the first minute -> "
        f"{final:.1f} MB at the end ({growth:+.1%}), peak {report['rss_peak_mb']} MB: "
        f"{'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
