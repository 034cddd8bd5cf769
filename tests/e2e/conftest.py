"""A real `onboarding serve` process, as `make run` starts it, and grpcurl to drive it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

BIN = Path(sys.executable).parent
GRPCURL = str(BIN / "grpcurl")
AGREEMENTS = "onboarding.agreement.v1.AgreementService"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")}
    # Metrics off unless a test asks: processes of parallel tests (or a developer's
    # `make run`) must not fight over port 9464.
    env["ONBOARDING_METRICS_PORT"] = "0"
    env.update(extra)
    return env


def run_onboarding(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "onboarding"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def grpcurl(port: int, *args: str, data: dict | None = None) -> str:
    command = [GRPCURL, "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    result = subprocess.run(
        [*command, f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class ServerProcess:
    def __init__(self, cwd: Path, env: dict[str, str], port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [str(BIN / "onboarding"), "serve"],
            cwd=cwd,
            env={**env, "ONBOARDING_GRPC_PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout_lines: list[str] = []

    def wait_serving(self) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=20)
        finally:
            channel.close()

    def read_code(self) -> str:
        """The console backend prints each SMS on stdout; read until a code shows up."""
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            assert line, "server stdout closed before an SMS was printed"
            self.stdout_lines.append(line)
            found = re.search(r"(\d{6})\s*$", line)
            if line.startswith("SMS to") and found:
                return found.group(1)

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    """`onboarding migrate` then `onboarding serve` in an empty directory, all defaults but the
    port: the embedded SQLite database and the console SMS backend, as `make run` does."""
    env = clean_env(tmp_path)
    migrated = run_onboarding("migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "onboarding.db").exists()
    server = ServerProcess(tmp_path, env, free_port())
    try:
        server.wait_serving()
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
