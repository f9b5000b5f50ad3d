"""The kustomizations of deploy/kubernetes: what they name, and what they build.

``kubectl apply -k deploy/kubernetes`` is the cluster with KEDA scaling the workers;
``kubectl apply -k deploy/kubernetes/hpa`` the same with a plain HPA. Both build on
deploy/kubernetes/base. The build itself is checked with ``kubectl kustomize`` (no cluster
needed) where kubectl is installed.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.kube import KUBE, NAMESPACE, ROOT

OVERLAYS = {"keda": KUBE, "hpa": KUBE / "hpa"}
HPA = "HorizontalPodAutoscaler"
AUTOSCALERS = {"keda": ("ScaledObject", HPA), "hpa": (HPA, "ScaledObject")}
"""Per overlay: the autoscaler it has, and the one it must not have (both would fight over
the workers' replica count)."""


def kustomization(folder: pathlib.Path) -> dict[str, Any]:
    loaded = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def files_of(folder: pathlib.Path) -> set[pathlib.Path]:
    """The manifest files a kustomization brings in, through its bases too."""
    found: set[pathlib.Path] = set()
    for resource in kustomization(folder)["resources"]:
        path = (folder / resource).resolve()
        assert path.exists(), f"{folder}: {resource} does not exist"
        found |= files_of(path) if path.is_dir() else {path}
    return found


def test_each_kustomization_names_existing_files_in_the_namespace() -> None:
    for folder in (KUBE, KUBE / "base", KUBE / "hpa"):
        k = kustomization(folder)
        assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
        assert k["namespace"] == NAMESPACE
        files_of(folder)


def test_every_manifest_file_is_applied_by_an_overlay() -> None:
    manifests = {p.resolve() for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml"}
    keda, hpa = files_of(OVERLAYS["keda"]), files_of(OVERLAYS["hpa"])
    assert keda | hpa == manifests
    assert keda ^ hpa == {
        (KUBE / "worker-keda.yaml").resolve(),
        (KUBE / "hpa" / "worker-hpa.yaml").resolve(),
    }


def test_the_secret_comes_from_a_file_git_ignores() -> None:
    (generator,) = kustomization(KUBE / "base")["secretGenerator"]
    assert generator == {"name": "jobsys-secrets", "envs": ["secrets.env"]}
    assert (KUBE / "base" / "secrets.env.example").is_file()
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "deploy/kubernetes/base/secrets.env" in ignored
    # A fixed name: KEDA's TriggerAuthentication refers to it, and kustomize would not
    # rewrite a custom resource's reference to a hashed name.
    assert kustomization(KUBE / "base")["generatorOptions"] == {"disableNameSuffixHash": True}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(reason="kubectl is not installed: `kubectl kustomize` cannot build")
    tree = tmp_path_factory.mktemp("kube") / "kubernetes"
    shutil.copytree(KUBE, tree, ignore=shutil.ignore_patterns("secrets.env"))
    shutil.copy(tree / "base" / "secrets.env.example", tree / "base" / "secrets.env")
    out: dict[str, list[dict[str, Any]]] = {}
    for name, folder in OVERLAYS.items():
        where = tree / folder.relative_to(KUBE)
        done = subprocess.run(
            [kubectl, "kustomize", str(where)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        out[name] = [d for d in yaml.safe_load_all(done.stdout) if d]
    return out


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kubectl_kustomize_builds_valid_resources(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = built[overlay]
    version = kubernetes_validate.latest_version()
    for doc in docs:
        if not doc["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(doc, version, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    kinds = [d["kind"] for d in docs]
    present, absent = AUTOSCALERS[overlay]
    assert present in kinds and absent not in kinds
    assert {"Namespace", "ConfigMap", "Secret", "Service", "StatefulSet", "Deployment"} <= set(
        kinds
    )
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "jobsys-secrets"


def test_kustomize_keeps_kombu_s_list_names(built: dict[str, list[dict[str, Any]]]) -> None:
    (scaled,) = [d for d in built["keda"] if d["kind"] == "ScaledObject"]
    names = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"]}
    assert "jobs" in names and "jobs\x06\x169" in names
