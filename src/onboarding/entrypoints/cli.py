"""``onboarding serve`` and ``onboarding migrate``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from onboarding import __version__
from onboarding.config import Settings
from onboarding.entrypoints.event_loop import loop_factory

log = logging.getLogger("onboarding")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onboarding",
        description="Consent by SMS code and INN lookup, over gRPC. "
        "Settings come from ONBOARDING_* variables and ./.env.",
    )
    parser.add_argument("--version", action="version", version=f"onboarding {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve gRPC (ONBOARDING_GRPC_PORT, default 50051)")
    serve.add_argument("--port", type=int, help="listen on this port instead")
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port (ONBOARDING_WORKERS, default 1; PostgreSQL only)",
    )
    sub.add_parser("migrate", help="bring the database schema up to date")
    return parser


def load_settings(**overrides: object) -> Settings:
    """Settings, or one clear line on stderr and exit status 2 when a setting is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = "; ".join(
            (f"ONBOARDING_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in error.errors()
        )
        print(f"onboarding: invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if getattr(args, "port", None) is not None:
        overrides["grpc_port"] = args.port
    if getattr(args, "workers", None) is not None:
        overrides["workers"] = args.workers
    settings = load_settings(**overrides)
    from onboarding.entrypoints import logging as logs

    logs.configure(settings.log_format, settings.log_level)
    if args.command == "migrate":
        from onboarding.adapters.db import migrate

        asyncio.run(migrate.upgrade(settings.database_url))
        log.info("database schema is up to date")
        return 0
    return serve(settings)


def serve(settings: Settings) -> int:
    if settings.workers > 1:
        return _serve_workers(settings)
    database = settings.sqlite_path
    if database is None:
        return _serve_one(settings)
    from onboarding.adapters.db.sqlite_lock import DatabaseInUse, SqliteProcessLock

    lock = SqliteProcessLock(database)
    try:
        lock.acquire()
    except DatabaseInUse as error:
        print(f"onboarding: {error}", file=sys.stderr)
        return 2
    try:
        return _serve_one(settings)
    finally:
        lock.release()


def _serve_workers(settings: Settings) -> int:
    import shutil
    import tempfile

    # Before anything imports prometheus_client: every worker then writes its samples here,
    # and this process serves their sum.
    samples = tempfile.mkdtemp(prefix="onboarding-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = samples
    from onboarding.entrypoints.supervisor import Supervisor

    def started() -> None:
        if settings.metrics_port:
            from onboarding.adapters import metrics

            metrics.serve(settings.metrics_port)

    def exited(pid: int) -> None:
        from onboarding.adapters import metrics

        metrics.forget_process(pid)

    # Nothing of gRPC exists in this process: each child makes its own after the fork.
    supervisor = Supervisor(
        settings.workers,
        lambda _index: _serve_one(settings, metrics_here=False),
        on_started=started,
        on_exit=exited,
    )
    try:
        return supervisor.run()
    finally:
        shutil.rmtree(samples, ignore_errors=True)


def _serve_one(settings: Settings, *, metrics_here: bool = True) -> int:
    if metrics_here and settings.metrics_port:
        from onboarding.adapters import metrics

        metrics.serve(settings.metrics_port)
    from onboarding import bootstrap
    from onboarding.entrypoints.grpc.server import serve_until_signalled

    async def run() -> None:
        await serve_until_signalled(bootstrap.build(settings))

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(run())
    return 0
