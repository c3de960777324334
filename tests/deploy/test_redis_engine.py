"""The chart's `engine: redis` mode: what it renders (stateless edges only, no voters, no gRPC,
the Redis settings and password file), and the rendered pods run as real processes against a
real redis-server (Debian's, installed by the test script)."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest

from chartlib import CHART_DIR, NAMESPACE, Rendered, chart
from conftest import binary, timeout
from podsim import Cluster
from signalr import HubClient, http, mint


REDIS_VALUE_SETS = {
    "standalone, autoscaled": {"engine": "redis", "redis": {"url": "redis://redis.default.svc:6379"},
                               "edge": {"autoscaling": {"enabled": True}}},
    "cluster over TLS with a password": {"engine": "redis", "redis": {
        "clusterUrls": ["rediss://r-0.redis:6379", "rediss://r-1.redis:6379"], "prefix": "chat-prod",
        "existingSecret": "redis-auth", "caExistingSecret": "redis-ca"}},
}


@pytest.mark.parametrize("name", list(REDIS_VALUE_SETS))
def test_redis_values_lint_and_match_the_kubernetes_schemas(name):
    values = REDIS_VALUE_SETS[name]
    chart().validate_schema(chart().merge_values(values))
    report = helm.lint(str(CHART_DIR), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report
    rendered = Rendered(values)
    for obj in rendered.objects:
        doc = rendered.clean(obj)
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


def _env(workload: dict) -> dict[str, dict]:
    return {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_redis_mode_renders_stateless_edges_only():
    r = Rendered({"engine": "redis", "redis": {"url": "redis://redis.default.svc:6379", "prefix": "chat"}})
    kinds = [(o["kind"], o["metadata"]["name"]) for o in r.objects]
    assert not r.all("StatefulSet"), kinds
    assert not [name for kind, name in kinds if kind == "Service" and name.endswith("-headless")], kinds
    assert [o["metadata"]["name"] for o in r.all("PodDisruptionBudget")] == ["sb-switchboard-edge"]
    env = _env(r.deployment)
    for gone in ("SWITCHBOARD_GRPC_LISTEN", "SWITCHBOARD_CLUSTER_SECRET", "SWITCHBOARD_JOIN", "SWITCHBOARD_ROLE",
                 "SWITCHBOARD_NODE_ID", "SWITCHBOARD_ADVERTISE", "SWITCHBOARD_REDIS_PASSWORD_FILE"):
        assert gone not in env, gone
    assert env["SWITCHBOARD_ADVERTISE_HTTP"]["value"] == "$(POD_IP):8080"
    ports = [p["name"] for p in r.deployment["spec"]["template"]["spec"]["containers"][0]["ports"]]
    assert ports == ["http", "internal"]
    config = tomllib.loads(r.config_toml)
    assert (config["engine"], config["redis"], config["redis_prefix"]) == ("redis", "redis://redis.default.svc:6379", "chat")
    assert "redis_cluster" not in config
    assert "on Redis" in r.notes and "statefulset" not in r.notes


def test_redis_cluster_mode_with_tls_a_private_ca_and_a_password_from_secrets():
    urls = ["rediss://r-0.redis:6379", "rediss://r-1.redis:6379"]
    r = Rendered({"engine": "redis", "redis": {"clusterUrls": urls, "existingSecret": "redis-auth", "passwordKey": "pw",
                                               "caExistingSecret": "redis-ca", "caKey": "ca.pem"}})
    config = tomllib.loads(r.config_toml)
    assert config["redis_cluster"] == urls and "redis" not in config
    spec = r.deployment["spec"]["template"]["spec"]
    env = _env(r.deployment)
    assert env["SWITCHBOARD_REDIS_PASSWORD_FILE"]["value"] == "/etc/switchboard/redis/password"
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["redis-password"]["mountPath"] == "/etc/switchboard/redis" and mounts["redis-password"]["readOnly"]
    volume = next(v for v in spec["volumes"] if v["name"] == "redis-password")
    assert volume["secret"] == {"secretName": "redis-auth", "defaultMode": 0o440, "items": [{"key": "pw", "path": "password"}]}
    assert env["SWITCHBOARD_REDIS_CA_FILE"]["value"] == "/etc/switchboard/redis-ca/ca.crt"
    assert mounts["redis-ca"]["mountPath"] == "/etc/switchboard/redis-ca"
    volume = next(v for v in spec["volumes"] if v["name"] == "redis-ca")
    assert volume["secret"] == {"secretName": "redis-ca", "defaultMode": 0o440, "items": [{"key": "ca.pem", "path": "ca.crt"}]}


def test_rendered_redis_pods_serve_together(redis_url):
    rendered = Rendered({"engine": "redis", "redis": {"url": redis_url}, "edge": {"replicas": 3}})
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-redis-chart-"))
    cluster = Cluster(rendered, binary(), workdir)
    cluster.start_all()
    try:
        cluster.wait_ready(timeout(60))
        keys = cluster._secret("sb-switchboard")["access-keys"].decode().splitlines()
        first, last = cluster.pods[0], cluster.pods[-1]
        connection_string = f"Endpoint={tomllib.loads(rendered.config_toml)['endpoint']};AccessKey={keys[0]};Version=1.0;"
        client_token = mint(binary(), connection_string, "--hub", "chat", "--user", "u")
        # The token's audience is the public endpoint; the pods answer for it whichever one is asked.
        client = HubClient(first.url("http"), last.url("http"), "chat", client_token, timeout(10))
        try:
            endpoint = tomllib.loads(rendered.config_toml)["endpoint"]
            rest_token = mint(binary(), connection_string, "--rest", f"{endpoint}/api/v1/hubs/chat")
            status, body = http("POST", first.url("http", "/api/v1/hubs/chat"), token=rest_token,
                                body={"target": "m", "arguments": ["via-redis"]})
            assert status == 202, body
            assert client.next_message()["arguments"] == ["via-redis"]
        finally:
            client.close()
    finally:
        cluster.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
