"""Runs the pods a rendered chart describes as real `switchboard` processes on loopback.

Each pod gets its own loopback address (a random 127.x.y.0/24 block picked at run time), so the
chart's fixed ports (8080, 7001, 9090) never collide. A pod's process gets exactly what the
kubelet would give its container, taken from the rendered objects:

- argv: the container's command and args, the command's path mapped to the binary under test
  (it must be where the Dockerfile installs it);
- environment: the image's ENV (the Dockerfile's last stage), then the container's env in order
  with Kubernetes' $(VAR) expansion, downward-API fields (pod name, namespace, pod IP), and
  secretKeyRef / configMapKeyRef values from the rendered Secret and ConfigMap; HOSTNAME is the
  pod name, as in a pod;
- files: every volume mount becomes a directory under the pod's temp dir: ConfigMap and Secret
  volumes are written from the rendered objects (items, modes), emptyDirs and claims are empty.

What a cluster's DNS and network do is emulated by rewriting values: the voters' stable DNS
names become their pods' addresses, and a wildcard listen address (0.0.0.0) becomes the pod's
own address. Nothing else is changed; anything left unresolved is reported.
"""

from __future__ import annotations

import base64
import ctypes
import json
import random
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chartlib import NAMESPACE, ROOT, Rendered

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def dockerfile_runtime() -> dict[str, Any]:
    """ENV, WORKDIR, ENTRYPOINT, CMD and the binary's path of the Dockerfile's last stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest.strip()))
    last = stages[-1]
    env: dict[str, str] = {}
    info: dict[str, Any] = {"env": env, "workdir": "/", "stages": len(stages), "instructions": last}
    for word, rest in last:
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
        elif word == "WORKDIR":
            info["workdir"] = rest
        elif word in ("ENTRYPOINT", "CMD"):
            info[word.lower()] = json.loads(rest)
        elif word == "COPY" and "--from=build" in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            if parts[0].endswith("/switchboard"):
                info["binary"] = parts[-1]
    return info


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process goes away, however it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def k8s_expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay."""
    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return defined.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", repl, value)


def probe(url: str) -> int:
    """The status of a kubelet-style HTTP GET probe (0 when nothing answered)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def port_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def pick_ip_block(count: int, ports: list[int], attempts: int = 50) -> list[str]:
    """`count` loopback addresses in one random 127.x.y.0/24 block, every port free on each."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        a, b = rng.randrange(16, 255), rng.randrange(0, 256)
        ips = [f"127.{a}.{b}.{10 + i}" for i in range(count)]
        if all(port_free(ip, p) for ip in ips for p in ports):
            return ips
    raise RuntimeError("no free loopback block found")


@dataclass
class Pod:
    name: str
    component: str
    ip: str
    workload: dict[str, Any]
    root: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen | None = None
    ports: dict[str, int] = field(default_factory=dict)
    mounts: dict[str, Path] = field(default_factory=dict)

    @property
    def container(self) -> dict[str, Any]:
        return self.workload["spec"]["template"]["spec"]["containers"][0]

    @property
    def log(self) -> Path:
        return self.root / "stderr.log"

    @property
    def out(self) -> Path:
        return self.root / "stdout.log"

    def url(self, port_name: str, path: str = "") -> str:
        return f"http://{self.ip}:{self.ports[port_name]}{path}"

    def probe_url(self, probe: str) -> str:
        get = self.container[probe]["httpGet"]
        port = get["port"]
        number = self.ports[port] if isinstance(port, str) else port
        return f"http://{self.ip}:{number}{get['path']}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """The pods of one rendered release, on loopback."""

    def __init__(self, rendered: Rendered, binary: str, workdir: Path, *, edge_replicas: int | None = None):
        self.rendered = rendered
        self.binary = binary
        self.workdir = workdir
        self.image = dockerfile_runtime()
        # No StatefulSet with `engine: redis`: every pod is an edge of the Deployment.
        statefulsets = rendered.all("StatefulSet")
        sts, deploy = (statefulsets[0] if statefulsets else None), rendered.deployment
        voters = sts["spec"]["replicas"] if sts else 0
        edges = edge_replicas if edge_replicas is not None else deploy["spec"]["replicas"]
        workloads = [w for w in (sts, deploy) if w]
        all_ports = sorted({p["containerPort"] for w in workloads for p in w["spec"]["template"]["spec"]["containers"][0]["ports"]})
        ips = pick_ip_block(voters + edges, all_ports)
        rng = random.SystemRandom()
        # Pod names as the controllers make them: <sts>-<ordinal>, <deployment>-<template hash>-<suffix>.
        template_hash = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(10))
        self.pods: list[Pod] = []
        for i in range(voters):
            name = f"{sts['metadata']['name']}-{i}"
            self.pods.append(Pod(name, "control", ips[i], sts, workdir / name))
        for i in range(edges):
            suffix = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            name = f"{deploy['metadata']['name']}-{template_hash}-{suffix}"
            self.pods.append(Pod(name, "edge", ips[voters + i], deploy, workdir / name))
        # Cluster DNS: the voters' stable names (<pod>.<headless service>.<namespace>.svc.<domain>).
        domain = rendered.values["clusterDomain"]
        headless = sts["spec"]["serviceName"] if sts else ""
        self.dns = {f"{p.name}.{headless}.{NAMESPACE}.svc.{domain}": p.ip for p in self.pods if p.component == "control"}
        self.unresolved: set[str] = set()
        for pod in self.pods:
            self._prepare(pod)

    # -------------------------------------------------------------- the pod's view

    def _secret(self, name: str) -> dict[str, bytes]:
        for s in self.rendered.all("Secret"):
            if s["metadata"]["name"] == name:
                data = {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
                data.update({k: v.encode() for k, v in (s.get("stringData") or {}).items()})
                return data
        raise AssertionError(f"the pods reference Secret {name}, which the chart did not render")

    def _configmap(self, name: str) -> dict[str, bytes]:
        cm = self.rendered.one("ConfigMap", name)
        return {k: v.encode() for k, v in cm.get("data", {}).items()}

    def _host_path(self, pod: Pod, container_path: str, mounts: dict[str, Path]) -> str:
        for mount_path in sorted(mounts, key=len, reverse=True):
            if container_path == mount_path or container_path.startswith(mount_path.rstrip("/") + "/"):
                return str(mounts[mount_path]) + container_path[len(mount_path.rstrip("/")):]
        return container_path

    def _rewrite(self, pod: Pod, value: str, mounts: dict[str, Path]) -> str:
        # Files: a value that is a path under a mount names the pod's copy of it.
        if value.startswith("/"):
            value = self._host_path(pod, value, mounts)
        # Wildcard listen addresses: the pod's own address.
        value = re.sub(r"(?<![\d.])0\.0\.0\.0:", f"{pod.ip}:", value)
        # Cluster DNS names.
        for name in sorted(self.dns, key=len, reverse=True):
            value = value.replace(name, self.dns[name])
        for leftover in re.findall(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\.svc\.[a-z0-9.-]+", value):
            self.unresolved.add(leftover)
        return value

    def _prepare(self, pod: Pod) -> None:
        spec = pod.workload["spec"]["template"]["spec"]
        container = pod.container
        pod.root.mkdir(parents=True, exist_ok=True)
        pod.ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # Volumes.
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in pod.workload["spec"].get("volumeClaimTemplates", [])}
        mounts: dict[str, Path] = {}
        for m in container.get("volumeMounts", []):
            host = pod.root / "fs" / m["mountPath"].lstrip("/")
            host.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = host
            if m["name"] in claims:
                continue
            volume = volumes[m["name"]]
            if "emptyDir" in volume:
                continue
            if "configMap" in volume:
                data, source = self._configmap(volume["configMap"]["name"]), volume["configMap"]
            elif "secret" in volume:
                data, source = self._secret(volume["secret"]["secretName"]), volume["secret"]
            else:
                raise AssertionError(f"volume kind not emulated: {volume}")
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                assert item["key"] in data, f"{m['name']}: key {item['key']} is not in the rendered object"
                path = host / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data[item["key"]])
                path.chmod(item.get("mode", source.get("defaultMode", 0o644)) | 0o600)
        # Environment: the image's, then the container's (in order, with $(VAR) expansion).
        env: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOSTNAME": pod.name}
        env.update(self.image["env"])
        fields = {"metadata.name": pod.name, "metadata.namespace": NAMESPACE, "status.podIP": pod.ip}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update({k: v.decode() for k, v in self._configmap(source["configMapRef"]["name"]).items()})
            if "secretRef" in source:
                env.update({k: v.decode() for k, v in self._secret(source["secretRef"]["name"]).items()})
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = k8s_expand(entry["value"], env)
                continue
            ref = entry["valueFrom"]
            if "fieldRef" in ref:
                env[entry["name"]] = fields[ref["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in ref:
                env[entry["name"]] = self._secret(ref["secretKeyRef"]["name"])[ref["secretKeyRef"]["key"]].decode()
            elif "configMapKeyRef" in ref:
                env[entry["name"]] = self._configmap(ref["configMapKeyRef"]["name"])[ref["configMapKeyRef"]["key"]].decode()
            else:
                raise AssertionError(f"env source not emulated: {entry}")
        pod.env = {k: self._rewrite(pod, v, mounts) for k, v in env.items()}
        # Command: the binary under test stands in for the image's.
        argv = list(container.get("command") or self.image["entrypoint"]) + list(
            container.get("args") or ([] if container.get("command") else self.image.get("cmd", [])))
        assert argv[0] == self.image["binary"], f"the chart runs {argv[0]}, the image has {self.image['binary']}"
        pod.argv = [self.binary] + [self._rewrite(pod, a, mounts) for a in argv[1:]]
        workdir = container.get("workingDir") or self.image["workdir"]
        pod.cwd = Path(self._host_path(pod, workdir, mounts))
        pod.cwd.mkdir(parents=True, exist_ok=True)
        pod.mounts = mounts

    # -------------------------------------------------------------- lifecycle

    def start(self, pod: Pod) -> None:
        with open(pod.out, "ab") as out, open(pod.log, "ab") as err:
            pod.process = subprocess.Popen(pod.argv, env=pod.env, cwd=pod.cwd, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=err, start_new_session=True, preexec_fn=_die_with_parent)

    def start_all(self) -> None:
        for pod in self.pods:
            self.start(pod)

    def wait_ready(self, seconds: float) -> None:
        """Waits (bounded) until every pod's readiness probe answers 200; fails naming a pod
        that exited or stayed unready."""
        for pod in self.pods:
            deadline = time.monotonic() + seconds
            while probe(pod.probe_url("readinessProbe")) != 200:
                assert pod.alive(), f"{pod.name} exited:\n{pod.tail()}"
                assert time.monotonic() < deadline, f"{pod.name} not ready:\n{pod.tail()}\n\n{self.describe()}"
                time.sleep(0.2)

    def pre_stop_and_terminate(self, pod: Pod) -> float:
        """What the kubelet does to stop a pod: the preStop hook, then SIGTERM, then SIGKILL
        once terminationGracePeriodSeconds (counted from the hook's start) have passed.
        Returns the seconds from the hook's start to the process' exit."""
        spec = pod.workload["spec"]["template"]["spec"]
        grace = spec.get("terminationGracePeriodSeconds", 30)
        started = time.monotonic()
        hook = pod.container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        if hook:
            subprocess.run(hook, env=pod.env, timeout=grace, check=True)
        return self._terminate(pod, started, grace)

    def _terminate(self, pod: Pod, started: float, grace: float) -> float:
        if not pod.alive():
            return time.monotonic() - started
        pod.process.send_signal(signal.SIGTERM)
        try:
            pod.process.wait(timeout=max(0.1, grace - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            pod.process.kill()
            pod.process.wait(timeout=10)
            return float("inf")
        return time.monotonic() - started

    def stop_all(self) -> None:
        """SIGTERM every pod at once, SIGKILL what is left after the grace period."""
        live = [p for p in self.pods if p.alive()]
        for pod in live:
            pod.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for pod in live:
            try:
                pod.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait(timeout=10)

    def by_component(self, component: str) -> list[Pod]:
        return [p for p in self.pods if p.component == component]

    def describe(self) -> str:
        lines = []
        for pod in self.pods:
            env = " ".join(f"{k}={v}" for k, v in sorted(pod.env.items()) if k.startswith("SWITCHBOARD_") and "SECRET" not in k)
            lines.append(f"{pod.name} {pod.ip}: {' '.join(pod.argv)} [{env}]")
        return "\n".join(lines)
