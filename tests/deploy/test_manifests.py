"""The Kubernetes manifests and the Dockerfile agree with the service they run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from onboarding.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KNOWN = {f"ONBOARDING_{name.upper()}" for name in Settings.model_fields}


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    [only] = manifest["spec"]["template"]["spec"]["containers"]
    return only


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    # Applying the kustomization must never replace a Secret that comes from a secret store.
    listed = set(load("kustomization.yaml")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


def test_config_and_secret_hold_only_known_settings() -> None:
    assert set(load("configmap.yaml")["data"]) <= KNOWN
    secret = load("secret.example.yaml")["stringData"]
    assert set(secret) <= KNOWN
    assert {"ONBOARDING_DATABASE_URL", "ONBOARDING_SECRET_KEY", "ONBOARDING_AUTH_TOKENS"} <= set(
        secret
    )


def test_probes_use_native_grpc_health() -> None:
    server = container(load("deployment.yaml"))
    assert server["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
    assert server["startupProbe"]["grpc"]["service"] == "liveness"
    assert server["readinessProbe"]["grpc"] == {"port": 50051, "service": ""}


def test_termination_grace_outlasts_the_drain() -> None:
    deployment = load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    drain = float(load("configmap.yaml")["data"]["ONBOARDING_SHUTDOWN_GRACE_SECONDS"])
    pause = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > drain + pause


def test_pods_run_as_non_root_with_resources() -> None:
    for name in ("deployment.yaml", "migration-job.yaml"):
        manifest = load(name)
        pod = manifest["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        main = container(manifest)
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]


def test_migration_job_migrates_and_server_serves() -> None:
    assert container(load("migration-job.yaml"))["command"] == ["onboarding", "migrate"]
    assert container(load("deployment.yaml"))["args"] == ["onboarding", "serve"]


def test_services_and_budget_select_the_server_pods() -> None:
    labels = load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    for name in ("service.yaml", "service-headless.yaml"):
        assert load(name)["spec"]["selector"].items() <= labels.items()
    assert load("poddisruptionbudget.yaml")["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )


def test_dockerfile_is_multi_stage_non_root_and_serves() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) >= 2
    user = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert 'CMD ["onboarding", "serve"]' in text
