"""deploy/kubernetes/: valid for the Kubernetes API, and saying what the service needs.

Every manifest is validated strictly (unknown fields are errors) with
kubernetes-validate, which ships the API's JSON schemas: no cluster needed. Then the
properties that matter to this service: probes on paths its HTTP app serves, a grace
period longer than its drain, a non-root pod, selectors that match the Deployment's
pods and no others, settings that the service knows, secrets that exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
from fastapi.routing import APIRoute
from kubernetes_validate.utils import resources_from_file

from consumer.config import Settings, load_settings
from consumer.entrypoints.http_api import HttpContext, create_app
from consumer.entrypoints.runner import DRAIN_SECONDS

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# The oldest Kubernetes release still commonly run; the manifests use nothing newer.
KUBERNETES_VERSION = "1.30"
# The image's user (Dockerfile: useradd --uid 10001).
IMAGE_UID = 10001

Resource = dict[str, Any]


def _load(name: str) -> list[Resource]:
    return cast(list[Resource], resources_from_file(str(KUBERNETES / name)))


def _manifests() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def _one(kind: str) -> Resource:
    found = [r for p in _manifests() for r in _load(p.name) if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_spec(workload: Resource) -> Resource:
    return cast(Resource, workload["spec"]["template"]["spec"])


def _container(workload: Resource) -> Resource:
    containers = _pod_spec(workload)["containers"]
    assert len(containers) == 1
    return cast(Resource, containers[0])


def _served_get_paths() -> set[str]:
    """GET paths of the service's real HTTP app (nothing is called to list them)."""
    unused = cast(Any, None)
    app = create_app(HttpContext(unused, unused, unused, None))
    return {r.path for r in app.routes if isinstance(r, APIRoute) and "GET" in (r.methods or ())}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_manifest_is_valid_for_the_kubernetes_api(path: Path) -> None:
    resources = _load(path.name)
    assert resources, f"{path.name} holds no resource"
    for resource in resources:
        # Raises on an invalid resource, and on a kind or apiVersion it has no schema for.
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            name = f"{resource['kind']}/{resource['metadata']['name']}"
            pytest.fail(f"{path.name}: {name}: {where}: {exc.message}", pytrace=False)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    (kustomization,) = _load("kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in _manifests()}
    assert listed == on_disk - {"secret.example.yaml"}
    # The images kustomize rewrites are the ones the workloads use.
    image_names = {i["name"] for i in kustomization["images"]}
    for kind in ("Deployment", "Job"):
        assert _container(_one(kind))["image"].split(":")[0] in image_names


def test_probes_ask_for_paths_the_service_serves() -> None:
    deployment = _one("Deployment")
    container = _container(deployment)
    served = _served_get_paths()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] in served, f"{probe} asks for {http_get['path']}"
        assert http_get["port"] in ports
    # Liveness asks whether the loops run; readiness whether it can work now.
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    config = _one("ConfigMap")["data"]
    assert ports[container["readinessProbe"]["httpGet"]["port"]] == int(config["HTTP_PORT"])
    # Probes come from the kubelet, not from inside the pod.
    assert config["HTTP_HOST"] == "0.0.0.0"


def test_grace_period_outlasts_the_drain() -> None:
    grace = _pod_spec(_one("Deployment"))["terminationGracePeriodSeconds"]
    # The drain, then closing the Kafka clients and the pool: well past DRAIN_SECONDS.
    assert grace >= DRAIN_SECONDS + 15


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_as_the_image_user_not_root(kind: str) -> None:
    workload = _one(kind)
    pod = _pod_spec(workload)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["automountServiceAccountToken"] is False
    container = _container(workload)["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]


def test_resources_are_sized_from_the_measured_memory() -> None:
    resources = _container(_one("Deployment"))["resources"]
    mebibytes = {"Mi": 1, "Gi": 1024}
    request, limit = (
        int(resources[k]["memory"][:-2]) * mebibytes[resources[k]["memory"][-2:]]
        for k in ("requests", "limits")
    )
    # One process peaks at ~260 MiB (README, Performance): the request covers it.
    assert 260 <= request <= limit


def test_selectors_pick_the_consumer_pods_only() -> None:
    deployment = _one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _matches(selector, pod_labels)
    job_labels = _one("Job")["spec"]["template"]["metadata"]["labels"]
    for kind, own in (
        ("PodDisruptionBudget", _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]),
        ("Service", _one("Service")["spec"]["selector"]),
    ):
        assert own == selector, f"{kind} selects {own}, the Deployment {selector}"
        # A migration pod is neither served traffic nor counted by the budget.
        assert not _matches(own, job_labels), f"{kind} also selects the migration Job's pods"
    service_port = _one("Service")["spec"]["ports"][0]["targetPort"]
    assert service_port in {p["name"] for p in _container(deployment)["ports"]}


def test_the_budget_leaves_pods_running() -> None:
    replicas = _one("Deployment")["spec"]["replicas"]
    budget = _one("PodDisruptionBudget")["spec"]
    assert replicas >= 2
    assert budget["maxUnavailable"] < replicas


def test_the_job_migrates_and_the_deployment_runs() -> None:
    assert _container(_one("Job"))["args"] == ["migrate"]
    assert _container(_one("Deployment"))["args"] == ["run"]
    assert _pod_spec(_one("Job"))["restartPolicy"] == "Never"


def test_settings_are_ones_the_service_reads() -> None:
    known = {name.upper() for name in Settings.model_fields}
    config = _one("ConfigMap")["data"]
    assert set(config) <= known, f"unknown settings: {sorted(set(config) - known)}"
    # Secrets never travel in the ConfigMap.
    secrets = {"DATABASE_URL", "ADMIN_TOKEN", "FOLLOWUP_ENCRYPTION_KEY", "SCHEMA_REGISTRY_PASSWORD"}
    assert not secrets & set(config)
    # Every value the ConfigMap gives is one the service accepts.
    load_settings(**{k.lower(): v for k, v in config.items()})


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_secret_references_name_keys_of_the_example_secret(kind: str) -> None:
    secret = _one("Secret")
    keys = set(secret["stringData"])
    container = _container(_one(kind))
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert "DATABASE_URL" in refs
    for name, ref in refs.items():
        assert ref["name"] == secret["metadata"]["name"], name
        assert ref["key"] in keys, f"{name} reads key {ref['key']}, not in the example Secret"
        assert name.lower() in Settings.model_fields
    # The example Secret holds placeholders only, marked as such.
    assert all("CHANGE-ME" in v for v in secret["stringData"].values())


def test_the_image_healthcheck_asks_for_liveness() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    [check] = [line for line in dockerfile.splitlines() if "urlopen(" in line]
    assert "/health/live'" in check
    assert "/health/live" in _served_get_paths()
