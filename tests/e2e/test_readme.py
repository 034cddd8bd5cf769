"""The README's grpcurl walk-through, run as written against a real server process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, ServerProcess, clean_env, free_port, run_onboarding

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def _walkthrough_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Walk-through with grpcurl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def _bash(script: str, port: int) -> subprocess.CompletedProcess[str]:
    script = script.replace("localhost:50051", f"localhost:{port}")
    # The README puts .venv/bin on PATH relative to the project root.
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=README.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_readme_walkthrough_works_as_written(served: ServerProcess) -> None:
    create, confirm, wrong = _walkthrough_blocks()

    created = _bash(create, served.port)
    assert created.returncode == 0, created.stderr
    assert "onboarding.agreement.v1.AgreementService" in created.stdout
    reference = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f-]{36}", reference)

    code = served.read_code()
    confirm = re.sub(r"^CODE=\d+.*$", f"CODE={code}", confirm, count=1, flags=re.MULTILINE)
    confirmed = _bash(f"REF={reference}\n{confirm}", served.port)
    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stdout.count("AGREEMENT_STATUS_CONFIRMED") >= 3
    assert '"status": "SERVING"' in confirmed.stdout

    refused = _bash(f"REF={reference}\n{wrong}", served.port)
    assert refused.returncode != 0
    assert "FailedPrecondition" in refused.stderr
    assert "AGREEMENT_NOT_PENDING" in refused.stderr
    assert "AGREEMENT_STATUS_CONFIRMED" in refused.stderr


def _inn_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## INN lookup with grpcurl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def test_readme_inn_lookup_against_the_fake_works_as_written(tmp_path: Path) -> None:
    start_fake, serve, lookup = _inn_blocks()
    fake_port = free_port()
    assert "--port 8090" in start_fake and "127.0.0.1:8090" in serve
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.nalog", "--port", str(fake_port)],
        cwd=README.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None and "fake service.nalog.ru" in fake.stdout.readline()
        env = clean_env(tmp_path, ONBOARDING_NALOG_BASE_URL=f"http://127.0.0.1:{fake_port}")
        migrated = run_onboarding("migrate", cwd=tmp_path, env=env)
        assert migrated.returncode == 0, migrated.stderr
        server = ServerProcess(tmp_path, env, free_port())
        try:
            server.wait_serving()
            done = _bash(lookup, server.port)
            assert done.returncode == 0, done.stderr
            assert done.stdout.count("INN_LOOKUP_STATUS_FOUND") == 2
            assert done.stdout.count('"inn": "500100732259"') == 2
        finally:
            server.process.kill()
            server.process.wait()
    finally:
        fake.kill()
        fake.wait()
