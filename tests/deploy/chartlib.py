"""Rendering the Helm chart offline (helm-python-sdk: the Helm 4 SDK as a shared library, no helm
binary, no cluster) and looking things up in the rendered objects."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "deploy" / "helm" / "switchboard"
RELEASE = "sb"
NAMESPACE = "chat"

# The value sets every chart test renders (the list, plus one that turns on the rest).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "five-voters": {"control": {"replicas": 5}},
    "edge-autoscaling": {
        "edge": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                                 "targetMemoryUtilizationPercentage": 80}},
    },
    "ingress": {
        "ingress": {
            "enabled": True,
            "hosts": [{"host": "rt.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "rt-tls", "hosts": ["rt.example.com"]}],
        },
    },
    "existing-secret": {
        "auth": {"existingSecret": "switchboard-keys", "accessKeysKey": "keys", "clusterSecretKey": "raft-secret"},
    },
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "everything-else": {
        "fullnameOverride": "rt",
        "clusterDomain": "k8s.internal",
        "endpoint": "https://signalr.example.org/",
        "image": {"repository": "registry.example.org/switchboard", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}],
        "auth": {"accessKeys": ["primary-key-0123456789", "secondary-key-0123456789"],
                 "clusterSecret": "cluster-secret-0123456789"},
        "config": {
            "logFormat": "plain", "logLevel": "debug", "shutdownGrace": 30, "keepAliveInterval": 10,
            "clientTimeout": 40, "allowedOrigins": ["https://app.example.org"],
            "upstream": [{"urlTemplate": "http://functions.apps.svc:7071/runtime/webhooks/signalr",
                          "hubPattern": "chat,news", "eventPattern": "*"}],
        },
        "preStopSleepSeconds": 0,
        "control": {"role": "both", "persistence": {"enabled": False}, "antiAffinity": "hard",
                    "priorityClassName": "system-cluster-critical",
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "rt", "effect": "NoSchedule"}],
                    "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}]},
        "edge": {"replicas": 4, "antiAffinity": "none", "nodeSelector": {"kubernetes.io/os": "linux"},
                 "strategy": {"maxSurge": "25%", "maxUnavailable": 1}, "pdb": {"enabled": False, "maxUnavailable": 1}},
        "service": {"type": "LoadBalancer", "port": 80, "annotations": {"example.org/lb": "internal"}},
        "serviceAccount": {"create": False, "name": "switchboard-runner"},
    },
}


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART_DIR))


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` (is_install) would produce."""
    return chart().render(copy.deepcopy(values) if values else None, name=name, namespace=namespace, is_install=True)


def objects(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object rendered (NOTES.txt left out)."""
    found = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__template__", path)
                found.append(doc)
    return found


class Rendered:
    """A rendered release: its objects and lookups used by the tests."""

    def __init__(self, values: dict[str, Any] | None = None):
        self.values = chart().merge_values(copy.deepcopy(values) if values else None)
        self.manifests = render(values)
        self.objects = objects(self.manifests)

    @property
    def notes(self) -> str:
        return next(text for path, text in self.manifests.items() if path.endswith("NOTES.txt"))

    def clean(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k != "__template__"}

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        matches = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[m['metadata']['name'] for m in matches]}"
        return matches[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        matches = self.all(kind)
        return matches[0] if matches else None

    @property
    def statefulset(self) -> dict[str, Any]:
        return self.one("StatefulSet")

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    def workloads(self) -> dict[str, dict[str, Any]]:
        return {"control": self.statefulset, "edge": self.deployment}

    @property
    def config_toml(self) -> str:
        return self.one("ConfigMap")["data"]["switchboard.toml"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, containers
    return containers[0]


def env_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(workload).get("env", [])}


def env_value(workload: dict[str, Any], name: str) -> str:
    entry = env_of(workload)[name]
    assert "value" in entry, f"{name} is not a literal value: {entry}"
    return entry["value"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
