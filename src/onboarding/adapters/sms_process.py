"""The SMS gateway's HTTP client, run in a helper process so its work leaves the gRPC event loop.

Every RPC of a server process runs on one event loop. Handing an SMS to the gateway costs that
loop about 40 µs of CPU measured alone, and more under load; in a helper process that work runs
on another core, and the loop only writes a line to a pipe and reads one back, about 20 µs.
Under the bench's load the helper still answers more CreateAgreement calls than sending inline
(651 against 615 rps, four alternating pairs, 2026-12-02), though by less than it did with
aiohttp's client, which cost 80 to 170 µs a send.

- The helper is ``python -m onboarding.entrypoints.sms_sender``, started on the first send by
  ``subprocess.Popen`` (vfork and exec: nothing of this process runs in the child), in a
  session of its own so that a terminal's Ctrl-C reaches only the server, which then closes it
  in order.
- Its settings (URL, token, timeout) are the first line on its stdin, never its argv or its
  environment, where ``ps`` and ``/proc`` show them; it inherits no ``ONBOARDING_*`` variable.
- It answers ``"ready"``, and sends are timed from then on. Then one JSON line a message each
  way: ``[seq, message_id, phone, text]`` in and ``[seq, "SENT"|"RETRY"|"FAILED", detail]``
  out. Lines made in one turn of the loop go out in one write. The helper sends with
  :class:`HttpSmsGateway`, so the contract's rules are the same code either way, and it logs
  neither phones nor texts.
- Faults: a helper that exits (crash, kill) fails the sends it holds with RETRY; one that does
  not answer within the SMS timeout and a margin is killed, and its sends RETRY. The next send
  starts a new helper, at most one a second. A RETRY may follow a hand-over that did happen:
  the message goes again with the same ``message_id``, as after any timeout.
- :meth:`SmsSenderProcess.close` closes the helper's stdin; it finishes what it holds and
  exits. A server killed outright closes that pipe too, so no helper outlives its server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from uuid import UUID

from onboarding.adapters.sms import DeliveryResult, HttpSmsGateway, SmsOutcome

log = logging.getLogger(__name__)

#: Beyond the SMS timeout, how long a send waits for the helper before it gives the helper up.
ANSWER_MARGIN_SECONDS = 2.0
#: At most one helper start per this long: a helper that cannot start is not retried per send.
RESTART_INTERVAL_SECONDS = 1.0
#: How long a helper may take to start (to import and read its settings).
STARTUP_SECONDS = 30.0
#: The helper's main (an entrypoint; named here, not imported).
HELPER_MODULE = "onboarding.entrypoints.sms_sender"
#: Longest line either side reads: one line holds one message; the bound is for one gone wrong.
LINE_LIMIT = 1 << 20
#: The helper's first line: it has its settings and takes messages.
_READY = b'"ready"\n'


class SmsSenderProcess:
    """An :class:`~onboarding.adapters.sms.SmsBackend` whose HTTP client runs in a helper."""

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout_seconds: float = 5.0,
        *,
        max_connections: int = 32,
        log_format: str = "console",
        log_level: str = "INFO",
        answer_margin_seconds: float = ANSWER_MARGIN_SECONDS,
        restart_interval_seconds: float = RESTART_INTERVAL_SECONDS,
        on_start: Callable[[str], None] = lambda _result: None,
    ) -> None:
        self._settings = _line(
            {
                "url": url,
                "token": token or None,
                "timeout_seconds": timeout_seconds,
                "max_connections": max_connections,
                "log_format": log_format,
                "log_level": log_level,
            }
        )
        self._answer_seconds = timeout_seconds + answer_margin_seconds
        self._restart_interval = restart_interval_seconds
        self._helper: _Helper | None = None
        self._starting = asyncio.Lock()
        self._last_start: float | None = None
        #: Told "started" or "failed" for every helper start (metrics).
        self._on_start = on_start

    @property
    def helper_pid(self) -> int | None:
        """The running helper's pid, if one runs (for operators' tools and tests)."""
        helper = self._helper
        return helper.pid if helper is not None and helper.alive else None

    async def send(self, message_id: UUID, phone_e164: str, text: str) -> SmsOutcome:
        helper = await self._running_helper()
        if helper is None:
            return SmsOutcome(DeliveryResult.RETRY, "sender process unavailable")
        seq, answer = helper.submit(str(message_id), phone_e164, text)
        try:
            async with asyncio.timeout(self._answer_seconds):
                return await answer
        except TimeoutError:
            log.warning("sms sender process %d did not answer in time: replaced", helper.pid)
            helper.kill("sender process did not answer")
            return SmsOutcome(DeliveryResult.RETRY, "timeout")
        finally:
            helper.forget(seq)

    async def close(self) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            await helper.close(self._answer_seconds)

    async def _running_helper(self) -> _Helper | None:
        helper = self._helper
        if helper is not None and helper.alive:
            return helper
        async with self._starting:
            helper = self._helper
            if helper is not None and helper.alive:
                return helper
            now = asyncio.get_running_loop().time()
            if self._last_start is not None and now - self._last_start < self._restart_interval:
                return None
            self._last_start = now
            try:
                self._helper = await _Helper.start(self._settings)
            except (OSError, TimeoutError) as error:
                log.warning("sms sender process did not start: %s", type(error).__name__)
                self._on_start("failed")
                return None
            self._on_start("started")
            return self._helper


class _Helper:
    """One helper process, the sends it holds, and the lines waiting to be written to it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        stdin: asyncio.WriteTransport,
        stdout: asyncio.StreamReader,
    ) -> None:
        self._process = process
        self._stdin = stdin
        self._stdout = stdout
        self.pid = process.pid
        self.alive = True
        self._closing = False
        self._pending: dict[int, asyncio.Future[SmsOutcome]] = {}
        self._lines: list[bytes] = []
        self._seq = itertools.count()
        self._loop = asyncio.get_running_loop()
        self._reader = self._loop.create_task(self._read(), name=f"sms-sender-{process.pid}")

    @classmethod
    async def start(cls, settings: bytes) -> _Helper:
        # subprocess.Popen, not the event loop's subprocess support: Popen starts the helper
        # with vfork, which runs no fork handlers, while uvloop forks, and gRPC's fork handler
        # then writes a warning to stderr (and a fork of this process is no place to run code).
        process = subprocess.Popen(  # noqa: ASYNC220, S603 - returns once exec'd; fixed argv
            [sys.executable, "-m", HELPER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")},
            start_new_session=True,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            loop = asyncio.get_running_loop()
            stdout = asyncio.StreamReader(limit=LINE_LIMIT)
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stdout), process.stdout
            )
            stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, process.stdin)
            stdin.write(settings)
            # Sends are timed from here on: a slow start (a cold machine) is not a hung helper.
            async with asyncio.timeout(STARTUP_SECONDS):
                ready = await stdout.readline()
            if ready != _READY:
                raise OSError(f"sms sender process {process.pid} did not start")
        except BaseException:
            process.kill()
            process.wait()
            raise
        return cls(process, stdin, stdout)

    def submit(
        self, message_id: str, phone_e164: str, text: str
    ) -> tuple[int, asyncio.Future[SmsOutcome]]:
        seq = next(self._seq)
        answer: asyncio.Future[SmsOutcome] = self._loop.create_future()
        self._pending[seq] = answer
        if not self._lines:
            self._loop.call_soon(self._flush)
        self._lines.append(_line([seq, message_id, phone_e164, text]))
        return seq, answer

    def forget(self, seq: int) -> None:
        self._pending.pop(seq, None)

    def kill(self, reason: str) -> None:
        self._end(reason)
        self._process.kill()  # reaps a helper that has already exited (see _exit_code)

    async def close(self, within_seconds: float) -> None:
        self._closing = True
        self._flush()
        self._stdin.close()
        try:
            async with asyncio.timeout(within_seconds):
                await asyncio.shield(self._reader)
        except TimeoutError:
            self.kill("sender process closed")
            await self._reader

    def _flush(self) -> None:
        lines, self._lines = b"".join(self._lines), []
        if lines and self.alive and not self._stdin.is_closing():
            self._stdin.write(lines)  # to a helper that is gone: dropped, its EOF ends our sends

    async def _read(self) -> None:
        try:
            while line := await self._stdout.readline():
                seq, result, detail = json.loads(line)
                answer = self._pending.pop(seq, None)
                if answer is not None and not answer.done():
                    answer.set_result(SmsOutcome(DeliveryResult(result), str(detail)))
        except (ValueError, TypeError):  # a line that is not ours, or longer than the limit
            log.warning("sms sender process %d wrote something unreadable: replaced", self.pid)
            self.kill("sender process broken")
        finally:
            self._end("sender process exited")
            self._stdin.close()
            code = await self._exit_code()
            if code and not self._closing:
                log.warning("sms sender process %d exited with %d", self.pid, code)

    async def _exit_code(self) -> int:
        """Waits for the helper's exit without blocking the loop: a pidfd turns readable."""
        if self._process.returncode is not None:  # reaped already, by Popen.kill
            return self._process.returncode
        if not hasattr(os, "pidfd_open"):  # not Linux: a thread waits instead
            return await asyncio.to_thread(self._process.wait)
        pidfd = os.pidfd_open(self._process.pid)
        try:
            exited = self._loop.create_future()
            self._loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
            try:
                await exited
            finally:
                self._loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)
        return self._process.wait()

    def _end(self, reason: str) -> None:
        """No more sends go to this helper; the ones it holds are to be tried again."""
        self.alive = False
        pending, self._pending = self._pending, {}
        for answer in pending.values():
            if not answer.done():
                answer.set_result(SmsOutcome(DeliveryResult.RETRY, reason))


def _line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


# The helper's side: its main is onboarding.entrypoints.sms_sender.


async def serve_sends(
    reader: asyncio.StreamReader, writer: asyncio.WriteTransport, gateway: HttpSmsGateway
) -> None:
    """Sends every request line read, side by side, and writes each outcome as it comes; at
    the end of input, finishes what it holds and returns."""
    loop = asyncio.get_running_loop()
    answers: list[bytes] = []
    writer.write(_READY)

    def flush() -> None:
        if answers:
            writer.write(b"".join(answers))
            answers.clear()

    async def send(seq: int, message_id: str, phone_e164: str, text: str) -> None:
        outcome = await gateway.send(UUID(message_id), phone_e164, text)
        if not answers:
            loop.call_soon(flush)
        answers.append(_line([seq, outcome.result.value, outcome.detail]))

    sending: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        try:
            seq, message_id, phone_e164, text = json.loads(line)
        except ValueError:
            log.error("sms sender process: a request line it cannot read; stopping")
            break
        task = loop.create_task(send(seq, message_id, phone_e164, text))
        sending.add(task)
        task.add_done_callback(sending.discard)
    await asyncio.gather(*sending)
    flush()
