"""Kubernetes manifests (deploy/k8s/): rendered by kubectl's kustomize, validated offline; the liveness probe for real.

There is no cluster and no container runtime here: the manifests are checked
as far as that allows (kustomize renders them, kubernetes-validate checks every
built-in object against the Kubernetes 1.32 schemas, and the cross-references
between objects are checked below), and the liveness command runs against real
Triton servers, including one whose Python-backend stub has died.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl")
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.32.0"


def render(overlay: str) -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize) is not on this machine")
    rendered = subprocess.run([KUBECTL, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    return [document for document in yaml.safe_load_all(rendered.stdout) if document]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay):
    import kubernetes_validate

    objects = render(overlay)
    assert {o["kind"] for o in objects} == {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PodMonitor", "ConfigMap"}
    for document in objects:
        if document["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD of the Prometheus operator: no schema offline (checked in the next test)
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_objects_point_at_each_other(overlay):
    objects = by_kind(render(overlay))
    deployment, service, hpa = objects["Deployment"], objects["Service"], objects["HorizontalPodAutoscaler"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {port["name"] for port in container["ports"]}
    assert port_names == {"http", "grpc", "metrics"}
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"],
                     objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
                     objects["PodMonitor"]["spec"]["selector"]["matchLabels"]):
        assert selector and selector.items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == port_names
    assert objects["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "avg_time_queue_us"
    rules = yaml.safe_load(objects["ConfigMap"]["data"]["config.yaml"])["rules"]
    assert rules[0]["name"]["as"] == "avg_time_queue_us"
    assert "delta(nv_inference_queue_duration_us" in rules[0]["metricsQuery"]
    assert "delta(nv_inference_request_success" in rules[0]["metricsQuery"]
    # The probes: readiness on Triton's health, liveness a real inference through the SDK.
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["exec"]["command"][:2] == ["sritm", "probe"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert {"mountPath": "/dev/shm", "name": "dshm"} in container["volumeMounts"]
    limits = container["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (overlay == "gpu")
    assert container["image"].startswith(f"sritm-triton-{overlay}:")
    assert "--model-repository=/opt/sritm/model_repository" in container["args"]


# --------------------------------------------------------------------------
# The film Jobs (deploy/k8s/jobs/); their scripts run for real in tests/test_segments.py.


def render_jobs() -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize) is not on this machine")
    jobs = ROOT / "deploy" / "k8s" / "jobs"
    rendered = subprocess.run([KUBECTL, "kustomize", str(jobs)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    objects = [document for document in yaml.safe_load_all(rendered.stdout) if document]
    return [*objects, yaml.safe_load((jobs / "concat-job.yaml").read_text())]  # applied once the parts are done


def test_the_film_jobs_validate_and_agree_with_their_configmap():
    import kubernetes_validate

    objects = render_jobs()
    for document in objects:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    film = next(o for o in objects if o["kind"] == "ConfigMap")
    claim = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    jobs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Job"}
    parts, concat = jobs["sritm-convert-parts"], jobs["sritm-concat"]
    assert parts["spec"]["completionMode"] == "Indexed"
    assert parts["spec"]["completions"] == int(film["data"]["PARTS"])
    assert parts["spec"]["backoffLimitPerIndex"] >= 1  # a failed part is retried alone
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every part's pod mounts it at once
    for job in (parts, concat):
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": film["metadata"]["name"]}}]
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert container["image"].startswith("sritm-client:")
    script = parts["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "JOB_COMPLETION_INDEX" in script and '--segment "$part/$PARTS"' in script
    assert "sritm concat" in concat["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert film["data"]["SRITM_URL"].split(":")[0] == "sritm-triton"  # the serving overlays' Service


# --------------------------------------------------------------------------
# The liveness command against real servers.


def probe(url: str, timeout_s: float = 5.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sritm_client.cli", "probe", "--url", url, "--timeout",
                           str(timeout_s)], capture_output=True, text=True, timeout=60)


@pytest.mark.server
def test_probe_passes_on_a_serving_server(triton_server):
    answer = probe(triton_server.grpc_url)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("ok: ")


def test_probe_fails_fast_without_a_server():
    started = time.monotonic()
    answer = probe("127.0.0.1:1", timeout_s=1.0)
    assert answer.returncode == 1 and answer.stderr.startswith("sritm: error:")
    assert len(answer.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 30


@pytest.mark.server
def test_probe_fails_when_a_stub_died_although_triton_says_ready(model_repository, tmp_path):
    from sritm_serving.triton_server import ServerPorts, TritonServer

    server = TritonServer(model_repository, ServerPorts.free(), log_path=tmp_path / "triton.log").start()
    try:
        assert probe(server.grpc_url).returncode == 0
        os.kill(server.stub_processes()["gpgmnet_x2_0_0"], signal.SIGKILL)
        time.sleep(1.0)
        assert server.is_ready(), "Triton should still report ready: that is why liveness runs an inference"
        answer = probe(server.grpc_url)
        assert answer.returncode == 1, answer.stdout
        assert answer.stderr.startswith("sritm: error:") and len(answer.stderr.strip().splitlines()) == 1
    finally:
        server.kill()
        server.stop()
