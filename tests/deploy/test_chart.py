"""The Helm chart, rendered offline with several value sets: lint, Kubernetes schemas (strict), and
the wiring between objects that no schema checks (voter addresses, ports, probes, secrets,
grace periods, selectors)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tomllib
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

from chartlib import (CHART_DIR, NAMESPACE, RELEASE, VALUE_SETS, Rendered, container, env_of, env_value, objects,
                      render, selects)

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas bundled.
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.utils.latest_version()]
SERVICE_MONITOR_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "servicemonitor-monitoring-v1.json").read_text())

# Keys of the node's config file the chart may write (FileConfig in crates/switchboard-server).
CONFIG_KEYS = {"endpoint", "log_format", "shutdown_grace", "keep_alive_interval", "client_timeout",
               "handshake_timeout", "max_message_size", "max_queued_bytes", "upstream_timeout",
               "allowed_origins", "upstream"}

HTTP_PORT, GRPC_PORT, INTERNAL_PORT = 8080, 7001, 9090

VALUE_SET_IDS = list(VALUE_SETS)


@pytest.fixture(scope="module", params=VALUE_SET_IDS)
def rendered(request) -> Rendered:
    return Rendered(VALUE_SETS[request.param])


def test_chart_metadata():
    meta = helm.Chart.load(str(CHART_DIR)).metadata
    assert meta["apiVersion"] == "v2" and meta["name"] == "switchboard"
    cargo = (CHART_DIR.parents[2] / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert meta["appVersion"] == version, "appVersion follows the workspace version (the image tag)"


@pytest.mark.parametrize("name", VALUE_SET_IDS)
def test_lint_is_clean(name):
    report = helm.lint(str(CHART_DIR), VALUE_SETS[name] or None, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, json.dumps(report, indent=2)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_matches_the_kubernetes_schemas(rendered, kube_version):
    kinds = [o["kind"] for o in rendered.objects]
    assert {"ConfigMap", "StatefulSet", "Deployment"} <= set(kinds) and kinds.count("Service") == 3, kinds
    for obj in rendered.objects:
        doc = rendered.clean(obj)
        where = f"{obj['__template__']}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} against {kube_version}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            pytest.fail(f"{where}: {e.message}")


def test_names_and_namespaces(rendered):
    for obj in rendered.objects:
        name = obj["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
        assert obj["metadata"]["namespace"] == NAMESPACE, name
    keys = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert len(keys) == len(set(keys)), keys


def test_voters_are_the_statefulset_pods(rendered):
    sts = rendered.statefulset
    replicas = rendered.values["control"]["replicas"]
    headless = rendered.one("Service", sts["spec"]["serviceName"])
    domain = f"{headless['metadata']['name']}.{NAMESPACE}.svc.{rendered.values['clusterDomain']}"
    sts_name = sts["metadata"]["name"]
    assert sts["spec"]["replicas"] == replicas
    # Readiness needs a quorum: every voter must start without waiting for the previous one.
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    voters = env_value(sts, "SWITCHBOARD_VOTERS").split(",")
    assert len(voters) == replicas
    assert voters == [f"{i + 1}={sts_name}-{i}.{domain}:{GRPC_PORT}" for i in range(replicas)]
    # node id `ordinal` = the pod name's ordinal + 1, which is how the list above numbers them.
    assert env_value(sts, "SWITCHBOARD_NODE_ID") == "ordinal"
    assert env_value(sts, "SWITCHBOARD_ROLE") == rendered.values["control"]["role"]
    assert env_value(sts, "SWITCHBOARD_ADVERTISE") == f"$(POD_NAME).{domain}:{GRPC_PORT}"
    assert env_value(sts, "SWITCHBOARD_ADVERTISE_HTTP") == f"$(POD_NAME).{domain}:{HTTP_PORT}"
    assert "SWITCHBOARD_JOIN" not in env_of(sts)
    # The headless Service gives those names, before the pods are ready.
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert selects(headless["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    assert not selects(headless["spec"]["selector"], rendered.deployment["spec"]["template"]["metadata"]["labels"])


def test_edges_join_every_voter(rendered):
    deploy, sts = rendered.deployment, rendered.statefulset
    voters = [v.split("=", 1)[1] for v in env_value(sts, "SWITCHBOARD_VOTERS").split(",")]
    assert env_value(deploy, "SWITCHBOARD_JOIN").split(",") == voters
    assert env_value(deploy, "SWITCHBOARD_ROLE") == "edge"
    assert env_value(deploy, "SWITCHBOARD_NODE_ID") == "auto"
    assert env_value(deploy, "SWITCHBOARD_ADVERTISE") == f"$(POD_IP):{GRPC_PORT}"
    assert env_value(deploy, "SWITCHBOARD_ADVERTISE_HTTP") == f"$(POD_IP):{HTTP_PORT}"
    assert "SWITCHBOARD_VOTERS" not in env_of(deploy)


def test_downward_api_and_env_references(rendered):
    """$(VAR) references only name variables defined earlier in the same list (Kubernetes'
    expansion rule), and the downward API fields are the ones the references need."""
    for workload in rendered.workloads().values():
        defined = []
        for entry in container(workload)["env"]:
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
                assert ref in defined, f"{entry['name']} uses $({ref}) before it is defined"
            defined.append(entry["name"])
        env = env_of(workload)
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_ports_listen_addresses_and_probes(rendered):
    for workload in rendered.workloads().values():
        c = container(workload)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": HTTP_PORT, "grpc": GRPC_PORT, "internal": INTERNAL_PORT}
        assert env_value(workload, "SWITCHBOARD_LISTEN") == f"0.0.0.0:{HTTP_PORT}"
        assert env_value(workload, "SWITCHBOARD_GRPC_LISTEN") == f"0.0.0.0:{GRPC_PORT}"
        assert env_value(workload, "SWITCHBOARD_INTERNAL_LISTEN") == f"0.0.0.0:{INTERNAL_PORT}"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "internal"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "internal"}
        assert c["command"] == ["/usr/local/bin/switchboard"] and c["args"] == ["serve"]


def test_grace_periods_are_consistent(rendered):
    config = tomllib.loads(rendered.config_toml)
    grace = config["shutdown_grace"]
    assert grace == rendered.values["config"]["shutdownGrace"]
    for workload in rendered.workloads().values():
        spec = workload["spec"]["template"]["spec"]
        pre_stop = container(workload).get("lifecycle", {}).get("preStop")
        sleep = 0
        if pre_stop:
            command = pre_stop["exec"]["command"]
            assert command[0] == "/bin/sleep"
            sleep = int(command[1])
        assert sleep == rendered.values["preStopSleepSeconds"]
        # SIGTERM comes after the preStop hook; the node drains for `grace`; the kubelet kills it
        # only after terminationGracePeriodSeconds, counted from the start of the hook.
        assert spec["terminationGracePeriodSeconds"] == sleep + grace + rendered.values["terminationMarginSeconds"]
        assert spec["terminationGracePeriodSeconds"] > sleep + grace
        # The grace is the config file's: no env var overrides it.
        assert "SWITCHBOARD_SHUTDOWN_GRACE" not in env_of(workload)


def test_config_checksum_rolls_pods(rendered):
    configmap_text = next(t for p, t in rendered.manifests.items() if p.endswith("/configmap.yaml"))
    want = hashlib.sha256(configmap_text.encode()).hexdigest()
    for workload in rendered.workloads().values():
        assert workload["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == want
    config = tomllib.loads(rendered.config_toml)
    assert set(config) <= CONFIG_KEYS, set(config) - CONFIG_KEYS
    for workload in rendered.workloads().values():
        assert env_value(workload, "SWITCHBOARD_CONFIG") == "/etc/switchboard/config/switchboard.toml"


def test_checksum_changes_with_the_config():
    before = Rendered({}).statefulset["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    after = Rendered({"config": {"shutdownGrace": 20}}).statefulset["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/config"] != before


def test_mounts_secrets_and_files(rendered):
    values = rendered.values
    secret_name = values["auth"]["existingSecret"] or rendered.one("Secret")["metadata"]["name"]
    for workload in rendered.workloads().values():
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["mountPath"]: m for m in container(workload)["volumeMounts"]}
        for m in mounts.values():
            assert m["name"] in volumes or m["name"] in claims, m
        # Access keys: a file of the mounted Secret (directory mount, no subPath: the kubelet
        # updates it in place and the node reloads it).
        key_file = env_value(workload, "SWITCHBOARD_ACCESS_KEY_FILE")
        secret_mount = mounts[str(Path(key_file).parent)]
        assert "subPath" not in secret_mount and secret_mount["readOnly"] is True
        secret_volume = volumes[secret_mount["name"]]["secret"]
        assert secret_volume["secretName"] == secret_name
        assert secret_volume["items"] == [{"key": values["auth"]["accessKeysKey"], "path": Path(key_file).name}]
        assert "SWITCHBOARD_ACCESS_KEY" not in env_of(workload)
        cluster_secret = env_of(workload)["SWITCHBOARD_CLUSTER_SECRET"]["valueFrom"]["secretKeyRef"]
        assert cluster_secret == {"name": secret_name, "key": values["auth"]["clusterSecretKey"]}
        # The config file is the ConfigMap's.
        config_path = Path(env_value(workload, "SWITCHBOARD_CONFIG"))
        config_mount = mounts[str(config_path.parent)]
        assert volumes[config_mount["name"]]["configMap"]["name"] == rendered.one("ConfigMap")["metadata"]["name"]
        assert config_path.name in rendered.one("ConfigMap")["data"]
        # Writable paths on a read-only root filesystem are volumes.
        assert env_value(workload, "SWITCHBOARD_DATA_DIR") in mounts and "/tmp" in mounts
    sts = rendered.statefulset
    if values["control"]["persistence"]["enabled"]:
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"]["resources"]["requests"]["storage"] == values["control"]["persistence"]["size"]
        assert "data" not in {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    else:
        assert "volumeClaimTemplates" not in sts["spec"]


def test_generated_or_existing_secret(rendered):
    auth = rendered.values["auth"]
    secrets = rendered.all("Secret")
    if auth["existingSecret"]:
        assert secrets == []
        return
    (secret,) = secrets
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {auth["accessKeysKey"], auth["clusterSecretKey"]}
    keys = data[auth["accessKeysKey"]].splitlines()
    if auth["accessKeys"]:
        assert keys == auth["accessKeys"]
        assert data[auth["clusterSecretKey"]] == auth["clusterSecret"]
    else:
        assert len(keys) == 1 and re.fullmatch(r"[A-Za-z0-9]{44}", keys[0])
        assert re.fullmatch(r"[A-Za-z0-9]{32}", data[auth["clusterSecretKey"]])


def test_public_service_needs_no_affinity(rendered):
    public = rendered.one("Service", rendered.one("ConfigMap")["metadata"]["name"])
    assert public["spec"].get("sessionAffinity", "None") == "None"
    assert public["spec"]["type"] == rendered.values["service"]["type"]
    assert public["spec"]["ports"] == [{"name": "http", "port": rendered.values["service"]["port"],
                                        "targetPort": "http", "protocol": "TCP"}]
    edge_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    control_labels = rendered.statefulset["spec"]["template"]["metadata"]["labels"]
    assert selects(public["spec"]["selector"], edge_labels)
    assert selects(public["spec"]["selector"], control_labels) == (rendered.values["control"]["role"] == "both")
    for svc in rendered.all("Service"):
        assert svc["spec"].get("sessionAffinity", "None") == "None", svc["metadata"]["name"]


def test_internal_service_and_service_monitor(rendered):
    internal = next(s for s in rendered.all("Service") if s["metadata"]["name"].endswith("-internal"))
    assert {p["name"]: (p["port"], p["targetPort"]) for p in internal["spec"]["ports"]} == {
        "grpc": (GRPC_PORT, "grpc"), "metrics": (INTERNAL_PORT, "internal")}
    for workload in rendered.workloads().values():
        assert selects(internal["spec"]["selector"], workload["spec"]["template"]["metadata"]["labels"])
    monitor = rendered.maybe("ServiceMonitor")
    if not rendered.values["metrics"]["serviceMonitor"]["enabled"]:
        assert monitor is None
        return
    matching = [s for s in rendered.all("Service")
                if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert matching == [internal]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_pod_disruption_budgets(rendered):
    pdbs = {p["metadata"]["name"]: p for p in rendered.all("PodDisruptionBudget")}
    for component, workload in rendered.workloads().items():
        wanted = rendered.values[component]["pdb"]
        matching = [p for p in pdbs.values()
                    if selects(p["spec"]["selector"]["matchLabels"], workload["spec"]["template"]["metadata"]["labels"])]
        if not wanted["enabled"]:
            assert matching == []
            continue
        (pdb,) = matching
        assert pdb["spec"]["maxUnavailable"] == wanted["maxUnavailable"]
        assert pdb["spec"]["selector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]


def test_edge_rollout_and_autoscaling(rendered):
    deploy = rendered.deployment
    edge = rendered.values["edge"]
    rolling = deploy["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": edge["strategy"]["maxSurge"], "maxUnavailable": edge["strategy"]["maxUnavailable"]}
    hpa = rendered.maybe("HorizontalPodAutoscaler")
    if not edge["autoscaling"]["enabled"]:
        assert hpa is None and deploy["spec"]["replicas"] == edge["replicas"]
        return
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deploy["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    # Utilization targets need requests.
    requests = deploy["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests)


def test_security_contexts_and_resources(rendered):
    for component, workload in rendered.workloads().items():
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["automountServiceAccountToken"] is False
        sc = container(workload)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        resources = container(workload)["resources"]
        assert resources["requests"] and resources["limits"]
        assert spec["serviceAccountName"] == (rendered.values["serviceAccount"]["name"] or rendered.one("ConfigMap")["metadata"]["name"])


def test_anti_affinity(rendered):
    for component, workload in rendered.workloads().items():
        mode = rendered.values[component]["antiAffinity"]
        affinity = workload["spec"]["template"]["spec"].get("affinity", {}).get("podAntiAffinity")
        if mode == "none":
            assert affinity is None
            continue
        if mode == "hard":
            (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
        else:
            (preferred,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
            term = preferred["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]


def test_endpoint_ingress_and_notes(rendered):
    values = rendered.values
    endpoint = tomllib.loads(rendered.config_toml)["endpoint"]
    ingress = rendered.maybe("Ingress")
    if values["endpoint"]:
        assert endpoint == values["endpoint"].rstrip("/")
    elif values["ingress"]["enabled"]:
        assert endpoint == "https://rt.example.com"
    else:
        public = rendered.one("Service", rendered.one("ConfigMap")["metadata"]["name"])
        assert endpoint == (f"http://{public['metadata']['name']}.{NAMESPACE}.svc.{values['clusterDomain']}"
                            f":{values['service']['port']}")
    if values["ingress"]["enabled"]:
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
        assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
        assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        public = rendered.one("Service", backend["name"])
        assert backend["port"]["name"] in {p["name"] for p in public["spec"]["ports"]}
    else:
        assert ingress is None
    secret_name = values["auth"]["existingSecret"] or rendered.one("Secret")["metadata"]["name"]
    notes = rendered.notes
    assert (f"Endpoint={endpoint};AccessKey=$(kubectl -n {NAMESPACE} get secret {secret_name} -o jsonpath="
            f"'{{.data.{values['auth']['accessKeysKey']}}}' | base64 -d | head -n 1);Version=1.0;") in notes
    assert "switchboard cluster status" in notes
    assert "9090:9090" in notes and "http://localhost:9090/console" in notes, "how to reach the console"
    laptop_hint = "--set endpoint=http://localhost:8080" in notes
    assert laptop_hint == (not values["ingress"]["enabled"] and not values["endpoint"]), notes


def test_ingress_annotations_can_be_overridden():
    r = Rendered({"ingress": {"enabled": True, "nginx": True, "timeoutSeconds": 600,
                              "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200",
                                              "example.org/team": "rt"}}})
    annotations = r.one("Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "600"
    assert annotations["example.org/team"] == "rt"
    plain = Rendered({"ingress": {"enabled": True, "nginx": False, "className": "traefik"}}).one("Ingress")
    assert "annotations" not in plain["metadata"] and plain["spec"]["ingressClassName"] == "traefik"


def test_config_file_values():
    r = Rendered(VALUE_SETS["everything-else"])
    config = tomllib.loads(r.config_toml)
    assert config["log_format"] == "plain" and config["shutdown_grace"] == 30
    assert config["allowed_origins"] == ["https://app.example.org"]
    assert config["upstream"] == [{"url_template": "http://functions.apps.svc:7071/runtime/webhooks/signalr",
                                   "hub_pattern": "chat,news", "category_pattern": "*", "event_pattern": "*"}]
    assert env_value(r.statefulset, "SWITCHBOARD_LOG") == "debug"
    assert env_value(r.statefulset, "RUST_BACKTRACE") == "1"
    # Strings with TOML-special characters survive.
    odd = Rendered({"config": {"upstream": [{"urlTemplate": 'http://app/{hub}?a="b"&c=\\d<e>'}]}})
    assert tomllib.loads(odd.config_toml)["upstream"][0]["url_template"] == 'http://app/{hub}?a="b"&c=\\d<e>'


def test_release_names():
    """The full name stays short enough for '<fullname>-control-headless' and pod names."""
    for release in ["switchboard", "a", "very-long-release-name-for-the-switchboard-chart-x"]:
        manifests = render({}, name=release)
        for obj in objects(manifests):
            assert len(obj["metadata"]["name"]) <= 63
        sts = next(o for o in objects(manifests) if o["kind"] == "StatefulSet")
        # Pod names (<sts>-<ordinal>) are DNS labels in the voters' addresses.
        assert len(sts["metadata"]["name"]) + 3 <= 63
    assert next(o for o in objects(render({}, name="switchboard")) if o["kind"] == "StatefulSet")["metadata"][
        "name"] == "switchboard-control"


def test_release_defaults():
    """What `helm install sb deploy/helm/switchboard` gives: names the docs use."""
    r = Rendered({})
    assert r.statefulset["metadata"]["name"] == f"{RELEASE}-switchboard-control"
    assert r.deployment["metadata"]["name"] == f"{RELEASE}-switchboard-edge"
    assert r.statefulset["spec"]["replicas"] == 3 and r.deployment["spec"]["replicas"] == 2
