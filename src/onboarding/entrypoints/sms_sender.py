"""The SMS sender helper process: ``python -m onboarding.entrypoints.sms_sender``.

A server process starts it (see ``onboarding.adapters.sms_process``) and talks to it over its
stdin and stdout; it is not meant to be run by hand. The first line it reads is its settings.
"""

from __future__ import annotations

import asyncio
import json
import sys

from onboarding.adapters.sms import HttpSmsGateway
from onboarding.adapters.sms_process import LINE_LIMIT, serve_sends
from onboarding.entrypoints.event_loop import loop_factory
from onboarding.entrypoints.logging import configure


async def run() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    writer, stdout = await loop.connect_write_pipe(_Stdout, sys.stdout)
    settings = json.loads(await reader.readline())
    configure(settings["log_format"], settings["log_level"])
    gateway = HttpSmsGateway(
        settings["url"],
        settings["token"],
        settings["timeout_seconds"],
        max_connections=settings["max_connections"],
    )
    try:
        await serve_sends(reader, writer, gateway)
    finally:
        await gateway.close()
        writer.close()
        await stdout.closed  # the last answers are written before the loop ends


class _Stdout(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def main() -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(run())


if __name__ == "__main__":
    main()
