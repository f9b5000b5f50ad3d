"""The Kubernetes manifests of deploy/kubernetes, loaded for the tests that check them."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
SECRETS_EXAMPLE = KUBE / "base" / "secrets.env.example"
NAMESPACE = "jobsys"
JOBSYS_ROLES = ("worker", "beat", "server", "flower")

Doc = dict[str, Any]


def manifest_files() -> list[pathlib.Path]:
    """Every manifest file (the kustomizations aside), in every overlay."""
    return sorted(p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml")


def load(path: pathlib.Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def all_docs() -> list[Doc]:
    return [d for p in manifest_files() for d in load(p)]


def env_file(path: pathlib.Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def generated_secret() -> Doc:
    """The Secret base/kustomization.yaml's secretGenerator makes of the example file."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "jobsys-secrets"},
        "type": "Opaque",
        "stringData": env_file(SECRETS_EXAMPLE),
    }


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def container(doc: Doc) -> Doc:
    (c,) = pod(doc)["containers"]
    return c


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def jobsys_deployments(docs: list[Doc]) -> dict[str, Doc]:
    return {role: one(docs, "Deployment", f"jobsys-{role}") for role in JOBSYS_ROLES}
