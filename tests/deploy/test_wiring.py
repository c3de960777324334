"""The chart's wiring against the real binary: the pods a rendered release describes (3 voters
and 2 edge nodes) run as `switchboard` processes on loopback with the command lines, environment
and files the chart renders (see podsim.py), and must form one working cluster.

This proves that the chart and the binary agree on ports, environment variable names, the voter
address pattern, node ids, the access-key file, the config file and the probe paths. Every wait
is bounded; every process is stopped at the end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from chartlib import ROOT, Rendered
from conftest import binary, timeout
from podsim import Cluster, Pod, port_free
from signalr import HubClient, http, mint
from test_dashboard import dashboard_metrics

VALUES = {"control": {"replicas": 3}, "edge": {"replicas": 2}}
HUB = "wiring"


def poll(what: str, check, seconds: float, interval: float = 0.2):
    """Calls check() until it succeeds: it returns True, or a tuple whose first item is true
    (the rest is data for the caller). Fails after `seconds` showing the last answer."""
    deadline = time.monotonic() + timeout(seconds)
    while True:
        last = check()
        if last is True or (isinstance(last, tuple) and last[0]):
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout(seconds):.0f} s (last: {last!r})")
        time.sleep(interval)


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return Rendered(VALUES)


@pytest.fixture(scope="module")
def cluster(rendered, request):
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-wiring-"))
    c = Cluster(rendered, binary(), workdir)
    # Only the public endpoint (a Service name no node dials) may stay a DNS name.
    endpoint_host = tomllib.loads(rendered.config_toml)["endpoint"].split("//", 1)[1].split(":")[0]
    assert c.unresolved <= {endpoint_host}, f"names the emulated cluster DNS does not know: {c.unresolved}"
    failed_before = request.session.testsfailed
    c.start_all()
    try:
        for pod in c.pods:
            def ready(pod=pod):
                if not pod.alive():
                    pytest.fail(f"{pod.name} exited with {pod.process.returncode}:\n{pod.tail()}\n\n{c.describe()}")
                status, _ = http("GET", pod.probe_url("readinessProbe"), timeout=2)
                return status == 200
            poll(f"{pod.name} /readyz", ready, 90)
        yield c
    finally:
        c.stop_all()
        if request.session.testsfailed > failed_before or os.environ.get("SWITCHBOARD_TEST_VERBOSE") == "1":
            print(c.describe())
            for pod in c.pods:
                print(f"--- {pod.name} (exit {pod.process.returncode if pod.process else '-'}), logs in {pod.root}")
                print(pod.tail(15))
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def connection_string(rendered, cluster) -> str:
    """The connection string as NOTES.txt tells users to build it: the endpoint it prints and the
    first line of the Secret's access-keys."""
    match = re.search(r'SWITCHBOARD_CONNECTION_STRING="Endpoint=([^;]+);AccessKey=\$\(kubectl .* get secret (\S+) -o '
                      r"jsonpath='\{\.data\.([^}]+)\}' \| base64 -d \| head -n 1\);Version=1\.0;\"", rendered.notes)
    assert match, rendered.notes
    endpoint, secret_name, key = match.groups()
    keys = cluster._secret(secret_name)[key].decode().splitlines()
    return f"Endpoint={endpoint};AccessKey={keys[0]};Version=1.0;"


def access_key(cs: str) -> str:
    return re.search(r"AccessKey=([^;]+);", cs).group(1)


def endpoint_of(cs: str) -> str:
    return re.search(r"Endpoint=([^;]+);", cs).group(1)


def test_every_pod_is_live_and_ready(cluster):
    for pod in cluster.pods:
        assert http("GET", pod.probe_url("livenessProbe"))[0] == 200, pod.name
        assert http("GET", pod.probe_url("readinessProbe"))[0] == 200, pod.name
    # The node prints the connection string once ready; its endpoint is the chart's.
    for pod in cluster.pods:
        first = pod.out.read_text().splitlines()[0]
        assert first.startswith(f"Endpoint={tomllib.loads(cluster.rendered.config_toml)['endpoint']};"), first


def test_metrics_on_the_scraped_port(cluster, rendered):
    """/metrics answers where the ServiceMonitor scrapes: the internal Service's `metrics` port,
    whose targetPort names a container port."""
    internal = next(s for s in rendered.all("Service") if s["metadata"]["name"].endswith("-internal"))
    target = next(p["targetPort"] for p in internal["spec"]["ports"] if p["name"] == "metrics")
    exposed: set[str] = set()
    for pod in cluster.pods:
        status, text = http("GET", pod.url(target, "/metrics"))
        assert status == 200, (pod.name, status, text[:300])
        assert re.search(r"^switchboard_ready 1$", text, re.M), (pod.name, text[:500])
        # Metric families (`# TYPE name kind`): a labelled family with no series yet (no REST
        # call so far) is still declared.
        exposed |= set(re.findall(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (?:counter|gauge|histogram)$", text, re.M))
    # Every metric family the Grafana dashboard queries exists.
    missing = {m for m in dashboard_metrics() if m not in exposed}
    assert not missing, f"the dashboard queries metrics no node exposes: {sorted(missing)}"


def _status_rows(stdout: str) -> tuple[str, list[dict]]:
    lines = stdout.strip().splitlines()
    header = lines[0]
    rows = []
    for line in lines[2:]:
        parts = line.split()
        rows.append({"id": int(parts[0]), "roles": parts[1], "address": parts[2], "state": parts[3]})
    return header, rows


def _expected_nodes(cluster: Cluster) -> dict[str, Pod]:
    return {f"{p.ip}:{p.ports['grpc']}": p for p in cluster.pods}


def test_cluster_status_command(cluster, connection_string):
    """`switchboard cluster status` as NOTES.txt prints it (`kubectl exec` into a pod: the pod's
    environment, only --endpoint given; the pod's own address stands in for its 127.0.0.1) lists
    every pod, one leader, voters 1..N at their stable addresses and the edges as learners. The
    key and the public endpoint (the token's audience) come from the pod's key file and config."""
    for pod in (cluster.by_component("edge")[0], cluster.by_component("control")[0]):
        out = subprocess.run([binary(), "cluster", "status", "--endpoint", f"http://{pod.ip}:{pod.ports['http']}"],
                             capture_output=True, text=True, timeout=30, env=pod.env, cwd=pod.cwd)
        assert out.returncode == 0, f"cluster status in {pod.name} ({pod.ip}): {out.stderr.strip()}"
        header, rows = _status_rows(out.stdout)
        _check_membership(cluster, rows, header)


def _check_membership(cluster: Cluster, rows: list[dict], leader_text: str):
    expected = _expected_nodes(cluster)
    assert sorted(r["address"] for r in rows) == sorted(expected), rows
    assert [r["state"] for r in rows].count("leader") == 1, rows
    for row in rows:
        pod = expected[row["address"]]
        if pod.component == "control":
            ordinal = int(pod.name.rsplit("-", 1)[1])
            assert row["id"] == ordinal + 1, (pod.name, row)
            assert row["state"] in ("leader", "voter"), row
        else:
            assert row["state"] == "learner" and "edge" in row["roles"], row
            assert row["id"] > len(cluster.by_component("control")), row
    leader = next(r for r in rows if r["state"] == "leader")
    assert str(leader["id"]) in leader_text


def test_cluster_membership_through_rest(cluster, connection_string):
    """GET /api/admin/cluster with a REST token for the public endpoint, on every node."""
    url = f"{endpoint_of(connection_string)}/api/admin/cluster"
    token = mint(binary(), connection_string, "--rest", url)
    leaders = set()
    for pod in cluster.pods:
        def answered(pod=pod):
            status, body = http("GET", pod.url("http", "/api/admin/cluster"), token=token)
            if status != 200:
                return False, status, body
            view = json.loads(body)
            return (len(view["nodes"]) == len(cluster.pods) and view["leader"] is not None), view
        _, view = poll(f"{pod.name} sees every node", answered, 30)
        rows = [{"id": n["id"], "roles": ",".join(n["roles"]), "address": n["address"], "state": n["state"]}
                for n in view["nodes"]]
        _check_membership(cluster, rows, str(view["leader"]))
        leaders.add(view["leader"])
    assert len(leaders) == 1, leaders


def test_broadcast_reaches_clients_on_other_nodes(cluster, connection_string):
    """A client negotiated on edge A but connected through edge B (proxied to its owner over
    --advertise-http), a client on edge B, a REST broadcast through edge A: both receive it."""
    edge_a, edge_b = cluster.by_component("edge")
    token = mint(binary(), connection_string, "--hub", HUB, "--user", "alice")
    proxied = HubClient(edge_a.url("http"), edge_b.url("http"), HUB, token, timeout(15))
    local = HubClient(edge_b.url("http"), edge_b.url("http"), HUB, token, timeout(15))
    try:
        url = f"{endpoint_of(connection_string)}/api/v1/hubs/{HUB}"
        rest = mint(binary(), connection_string, "--rest", url)
        status, body = http("POST", edge_a.url("http", f"/api/v1/hubs/{HUB}"), token=rest,
                            body={"target": "newMessage", "arguments": ["through the chart"]})
        assert status == 202, (status, body)
        for client in (proxied, local):
            message = client.next_message()
            assert message["type"] == 1 and message["target"] == "newMessage", message
            assert message["arguments"] == ["through the chart"]
        # A user send entering on the other edge reaches both of alice's connections.
        url = f"{endpoint_of(connection_string)}/api/v1/hubs/{HUB}/users/alice"
        rest = mint(binary(), connection_string, "--rest", url)
        status, body = http("POST", edge_b.url("http", f"/api/v1/hubs/{HUB}/users/alice"), token=rest,
                            body={"target": "direct", "arguments": [1]})
        assert status == 202, (status, body)
        for client in (proxied, local):
            assert client.next_message()["target"] == "direct"
    finally:
        proxied.close()
        local.close()


def test_access_keys_rotate_through_the_mounted_file(cluster, connection_string):
    """The rotation in deploy/README.md: the Secret gets the new key as a second line, then as the
    first; the kubelet swaps the mounted file; every node accepts the new key without a restart,
    and the old one until it is removed."""
    old = access_key(connection_string)
    new = "rotated" + "0123456789abcdefghijklmnopqrstuvwxyzABCD"
    endpoint = endpoint_of(connection_string)
    new_cs = connection_string.replace(old, new)
    url = f"{endpoint}/api/v1/hubs/{HUB}"
    old_token = mint(binary(), connection_string, "--rest", url)
    new_token = mint(binary(), new_cs, "--rest", url)
    pids = {pod.name: pod.process.pid for pod in cluster.pods}

    def write_keys(lines: list[str]):
        for pod in cluster.pods:
            key_file = Path(pod.env["SWITCHBOARD_ACCESS_KEY_FILE"])
            # The kubelet replaces the file atomically (a symlink swap); a rename is as atomic.
            tmp = key_file.with_name(".access-keys.tmp")
            tmp.write_text("".join(f"{k}\n" for k in lines))
            tmp.replace(key_file)

    def accepted(token: str) -> list[bool]:
        return [http("POST", pod.url("http", f"/api/v1/hubs/{HUB}"), token=token,
                     body={"target": "rotation", "arguments": []})[0] == 202
                for pod in cluster.by_component("edge")]

    try:
        write_keys([old, new])
        poll("every edge accepts the secondary key", lambda: all(accepted(new_token)), 30)
        assert all(accepted(old_token))
        write_keys([new, old])
        poll("the new key signs: every node still takes both", lambda: all(accepted(new_token) + accepted(old_token)), 30)
        write_keys([new])
        poll("the removed key is refused", lambda: not any(accepted(old_token)), 30)
        assert all(accepted(new_token))
    finally:
        write_keys([old])
        poll("the original key is back", lambda: all(accepted(old_token)), 30)
    assert {pod.name: pod.process.pid for pod in cluster.pods} == pids and all(p.alive() for p in cluster.pods)


def test_image_health_check(cluster):
    """The Dockerfile's HEALTHCHECK script against a node's internal port, and against nothing."""
    script = ROOT / "deploy" / "docker" / "healthcheck.sh"
    pod = cluster.pods[0]
    env = {"PATH": "/usr/bin:/bin", "SWITCHBOARD_INTERNAL_LISTEN": f"{pod.ip}:{pod.ports['internal']}"}
    assert subprocess.run(["bash", str(script)], env=env, timeout=15).returncode == 0
    unused = next(f"127.0.0.1:{p}" for p in range(29411, 29500) if port_free("127.0.0.1", p))
    env["SWITCHBOARD_INTERNAL_LISTEN"] = unused
    assert subprocess.run(["bash", str(script)], env=env, timeout=15, stderr=subprocess.DEVNULL).returncode != 0


def test_voter_restart_keeps_its_identity(cluster):
    """A voter pod restarted on its claim (same data dir, same name) rejoins as the same node."""
    pod = cluster.by_component("control")[1]
    spent = cluster.pre_stop_and_terminate(pod)
    grace = pod.workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert spent < grace, f"{pod.name} took {spent:.1f} s to stop (grace {grace} s)"
    cluster.start(pod)
    poll(f"{pod.name} ready again", lambda: http("GET", pod.probe_url("readinessProbe"), timeout=2)[0] == 200, 60)


def test_edge_drains_within_the_grace_period(cluster, connection_string, rendered):
    """The kubelet's stop sequence on an edge (preStop hook, SIGTERM): its clients are told to
    reconnect (Close with allowReconnect) and the process exits before
    terminationGracePeriodSeconds; the others stay ready."""
    edge = cluster.by_component("edge")[0]
    token = mint(binary(), connection_string, "--hub", HUB)
    client = HubClient(edge.url("http"), edge.url("http"), HUB, token, timeout(15))
    grace = edge.workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    try:
        spent = cluster.pre_stop_and_terminate(edge)
        close = client.next_message(types=(7,), timeout=timeout(5))
        assert close.get("allowReconnect") is True, close
    finally:
        client.close()
    assert spent < grace, f"{edge.name} took {spent:.1f} s to stop (grace {grace} s)"
    assert edge.process.returncode == 0, edge.tail()
    for pod in cluster.pods:
        if pod is not edge:
            assert http("GET", pod.probe_url("readinessProbe"))[0] == 200, pod.name


def test_backup_and_restore_of_raft_data(cluster, connection_string):
    """The backup in deploy/README.md: stop the world, copy each voter's <data dir>/raft, restore
    the copies into fresh volumes (one per ordinal), start again: durable state is back."""
    hub = "backup"
    endpoint = endpoint_of(connection_string)
    member_path = f"/api/v1/hubs/{hub}/users/bob/groups/night-shift"
    token = mint(binary(), connection_string, "--rest", endpoint + member_path)
    entry = next(p for p in cluster.by_component("edge") if p.alive())
    status, body = http("PUT", entry.url("http", member_path), token=token)
    assert status in (200, 202), (status, body)
    for pod in cluster.pods:
        if pod.alive():
            assert http("GET", pod.url("http", member_path), token=token)[0] == 200, pod.name

    cluster.stop_all()
    backup = cluster.workdir / "backup"
    for pod in cluster.by_component("control"):
        data_dir = Path(pod.env["SWITCHBOARD_DATA_DIR"])
        assert (data_dir / "raft").is_dir(), sorted(p.name for p in data_dir.iterdir())
        shutil.copytree(data_dir / "raft", backup / pod.name / "raft")
    # Fresh volumes: empty data directories, then each voter's copy restored into its own.
    for pod in cluster.pods:
        data_dir = Path(pod.env["SWITCHBOARD_DATA_DIR"])
        shutil.rmtree(data_dir)
        data_dir.mkdir()
        if pod.component == "control":
            shutil.copytree(backup / pod.name / "raft", data_dir / "raft")
    cluster.start_all()
    for pod in cluster.pods:
        poll(f"{pod.name} ready after the restore",
             lambda pod=pod: pod.alive() and http("GET", pod.probe_url("readinessProbe"), timeout=2)[0] == 200, 90)
    for pod in cluster.pods:
        status, body = http("GET", pod.url("http", member_path), token=token)
        assert status == 200, (pod.name, status, body)
    other = f"/api/v1/hubs/{hub}/users/alice/groups/night-shift"
    other_token = mint(binary(), connection_string, "--rest", endpoint + other)
    assert http("GET", entry.url("http", other), token=other_token)[0] == 404
