"""TLS in the chart: `tls.existingSecret` (https and wss on the public port) and
`clusterTls.existingSecret` (mutual TLS between nodes) render the right files, environment and
endpoint, and the pods they describe, run as real processes with certificates made by openssl
for the test, form a cluster whose nodes talk over mutual TLS and serve clients over TLS."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

from chartlib import Rendered, env_of, render
from conftest import binary, timeout
from podsim import Cluster
from signalr import HubClient, http, mint

VALUES = {"tls": {"existingSecret": "public-tls"}, "clusterTls": {"existingSecret": "node-tls"},
          "control": {"replicas": 3}, "edge": {"replicas": 1}}


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a public certificate for the pods (checked against the CA, not a name), and the
    node certificate carrying the chart's default cluster TLS name."""
    files = {name: directory / name for name in ("ca.crt", "ca.key", "public.crt", "public.key", "node.crt", "node.key")}
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]))
    for name, san in (("public", "DNS:sb-switchboard.chat.svc.cluster.local"), ("node", "DNS:sb-switchboard-node")):
        csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(files[f"{name}.key"]),
                "-out", str(csr))
        openssl("x509", "-req", "-days", "2", "-in", str(csr), "-CA", str(files["ca.crt"]), "-CAkey",
                str(files["ca.key"]), "-CAcreateserial", "-out", str(files[f"{name}.crt"]), "-extfile", str(ext))
    return files


def secret(name: str, data: dict[str, bytes]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def test_tls_settings_render_files_environment_and_an_https_endpoint():
    r = Rendered(VALUES)
    assert tomllib.loads(r.config_toml)["endpoint"].startswith("https://")
    for component, workload in r.workloads().items():
        env = {k: v.get("value") for k, v in env_of(workload).items()}
        assert env["SWITCHBOARD_TLS_CERT"] == "/etc/switchboard/tls/tls.crt", component
        assert env["SWITCHBOARD_TLS_KEY"] == "/etc/switchboard/tls/tls.key", component
        assert env["SWITCHBOARD_CLUSTER_TLS_CERT"] == "/etc/switchboard/cluster-tls/tls.crt", component
        assert env["SWITCHBOARD_CLUSTER_CA"] == "/etc/switchboard/cluster-tls/ca.crt", component
        assert env["SWITCHBOARD_CLUSTER_TLS_NAME"] == "sb-switchboard-node", component
        spec = workload["spec"]["template"]["spec"]
        mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert "subPath" not in mounts["tls"], "a subPath mount would never see a renewal"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "public-tls"
        assert [i["key"] for i in volumes["cluster-tls"]["secret"]["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    named = Rendered({**VALUES, "clusterTls": {"existingSecret": "node-tls", "serverName": "nodes.example"}})
    assert env_of(named.deployment)["SWITCHBOARD_CLUSTER_TLS_NAME"]["value"] == "nodes.example"
    plain = Rendered({})
    assert tomllib.loads(plain.config_toml)["endpoint"].startswith("http://")
    assert not any("TLS" in name for name in env_of(plain.statefulset))


def test_cluster_tls_is_refused_with_the_redis_engine():
    with pytest.raises(Exception, match="clusterTls is for the raft engine"):
        render({"engine": "redis", "redis": {"url": "redis://r:6379"}, "clusterTls": {"existingSecret": "x"}})


def test_rendered_pods_talk_over_mutual_tls_and_serve_clients_over_tls():
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-tls-chart-"))
    try:
        pki = make_pki(workdir)
        rendered = Rendered(VALUES)
        rendered.objects += [
            secret("public-tls", {"tls.crt": pki["public.crt"].read_bytes(), "tls.key": pki["public.key"].read_bytes()}),
            secret("node-tls", {"tls.crt": pki["node.crt"].read_bytes(), "tls.key": pki["node.key"].read_bytes(),
                                "ca.crt": pki["ca.crt"].read_bytes()}),
        ]
        cluster = Cluster(rendered, binary(), workdir / "pods")
        cluster.start_all()
        try:
            cluster.wait_ready(timeout(90))
            context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
            context.check_hostname = False  # pods are dialed by IP; the chain is still verified
            keys = cluster._secret("sb-switchboard")["access-keys"].decode().splitlines()
            endpoint = tomllib.loads(rendered.config_toml)["endpoint"]
            connection_string = f"Endpoint={endpoint};AccessKey={keys[0]};Version=1.0;"
            edge = cluster.by_component("edge")[0]
            voter = cluster.by_component("control")[0]
            https = lambda pod, path="": pod.url("http", path).replace("http://", "https://", 1)  # noqa: E731
            try:
                plain = http("GET", edge.url("http", "/api/health"), timeout=2)[0]
            except Exception:  # noqa: BLE001 - a TLS alert read as a status line
                plain = 0
            assert plain == 0, "plain HTTP is not served"
            client_token = mint(binary(), connection_string, "--hub", "chat", "--user", "u")
            client = HubClient(https(edge), https(edge), "chat", client_token, timeout(10), context=context)
            try:
                rest_token = mint(binary(), connection_string, "--rest", f"{endpoint}/api/v1/hubs/chat/users/u")
                status, body = http("POST", https(voter, "/api/v1/hubs/chat/users/u"), token=rest_token,
                                    body={"target": "m", "arguments": ["across nodes over TLS"]}, context=context)
                assert status == 202, body
                assert client.next_message()["arguments"] == ["across nodes over TLS"]
            finally:
                client.close()
            for pod in cluster.pods:
                assert "refused a peer" not in pod.log.read_text(errors="replace"), pod.tail()
        finally:
            cluster.stop_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
