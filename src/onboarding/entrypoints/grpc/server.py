"""The gRPC server: our services, health, reflection; started, drained and stopped cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from onboarding.agreement.v1 import agreement_pb2, agreement_pb2_grpc
from onboarding.bootstrap import Container
from onboarding.config import Settings
from onboarding.entrypoints.grpc import reflection
from onboarding.entrypoints.grpc.agreement_servicer import AgreementServicer
from onboarding.entrypoints.grpc.inn_servicer import InnServicer
from onboarding.entrypoints.grpc.observer import ObservedServer, RpcObserver
from onboarding.entrypoints.health import HealthMonitor
from onboarding.inn.v1 import inn_pb2, inn_pb2_grpc

log = logging.getLogger(__name__)

AGREEMENT_SERVICE = agreement_pb2.DESCRIPTOR.services_by_name["AgreementService"].full_name
INN_SERVICE = inn_pb2.DESCRIPTOR.services_by_name["InnService"].full_name
SERVICES = (AGREEMENT_SERVICE, INN_SERVICE)


class OnboardingServer:
    def __init__(self, container: Container, port: int | None = None) -> None:
        settings = container.settings
        self.container = container
        self._requested_port = settings.grpc_port if port is None else port
        self.port: int | None = None
        callers = settings.callers_by_token
        if callers is None:
            log.warning("ONBOARDING_AUTH_TOKENS is not set: every caller is let in unauthenticated")
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                # Several workers share the port; a lone server must not share it by accident.
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        # Every method registers observed: authentication, request ids, deadline, the access
        # log, metrics and ONBOARDING_MAX_CONCURRENT_RPCS (see observer, and there why not grpc's).
        observed = ObservedServer(self.server, RpcObserver(callers, settings.max_concurrent_rpcs))
        agreement_pb2_grpc.add_AgreementServiceServicer_to_server(
            AgreementServicer(container.agreements, settings.phone_default_region), observed
        )
        inn_pb2_grpc.add_InnServiceServicer_to_server(
            InnServicer(
                container.inn,
                settings.inn_wait_seconds,
                today=lambda: container.clock().date(),
            ),
            observed,
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, observed)
        reflection.enable(observed, [*SERVICES, "grpc.health.v1.Health"])
        self.monitor = HealthMonitor(
            self.health,
            container.reader.ping,
            SERVICES,
            interval=settings.health_check_interval_seconds,
            timeout=settings.database_timeout_seconds,
        )
        self._monitor_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        address = f"[::]:{self._requested_port}"
        credentials = _tls_credentials(self.container.settings)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        await self.monitor.start()
        await self.server.start()
        await self.monitor.check()
        self._monitor_task = asyncio.create_task(self.monitor.run(), name="health-monitor")
        self.container.start_background()
        log.info("serving on port %d", self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING everywhere, let in-flight RPCs finish within the grace, then close."""
        grace = self.container.settings.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self._monitor_task is not None:
            self._monitor_task.cancel()
        # A FindInn may wait longer than the grace for its answer: it answers PENDING now.
        self.container.inn.stop_waiting()
        await self.server.stop(grace)
        await self.container.aclose()
        log.info("stopped")


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS when a certificate and key are set; mutual TLS (client certificates required and
    checked against the CA) when a client CA is set too."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


async def serve_until_signalled(container: Container) -> None:
    server = OnboardingServer(container)
    # Handled from the start: a stop asked for while the server starts (its first database
    # check can take the database timeout) drains it as soon as it has started.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await server.start()
    await stopping.wait()
    log.info("signal received: draining")
    await server.stop()
