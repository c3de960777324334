"""values.schema.json (and the template checks it cannot express) reject wrong values: rendering
fails with a message naming the offending key, as `helm install` would."""

from __future__ import annotations

import json

import helm_python as helm
import pytest

from chartlib import CHART_DIR, VALUE_SETS, chart, render

# (values, words the error must contain)
BAD_VALUES = {
    "unknown top-level key": ({"replica": 3}, ["additional properties 'replica' not allowed"]),
    "unknown nested key (typo)": ({"control": {"replicaCount": 3}}, ["/control", "replicaCount"]),
    "even voter count": ({"control": {"replicas": 4}}, ["/control/replicas", "one of 1, 3, 5, 7"]),
    "voters as a string": ({"control": {"replicas": "3"}}, ["/control/replicas", "want integer"]),
    "no edges": ({"edge": {"replicas": 0}}, ["/edge/replicas", "minimum"]),
    "bad role": ({"control": {"role": "edge"}}, ["/control/role", "control", "both"]),
    "bad log format": ({"config": {"logFormat": "xml"}}, ["/config/logFormat", "plain", "json"]),
    "zero shutdown grace": ({"config": {"shutdownGrace": 0}}, ["/config/shutdownGrace", "minimum"]),
    "negative preStop sleep": ({"preStopSleepSeconds": -1}, ["/preStopSleepSeconds", "minimum"]),
    "message size below 1 KiB": ({"config": {"maxMessageSize": 100}}, ["/config/maxMessageSize", "minimum"]),
    "https upstream": ({"config": {"upstream": [{"urlTemplate": "https://app/hook"}]}}, ["/config/upstream/0/urlTemplate"]),
    "upstream without url": ({"config": {"upstream": [{"hubPattern": "chat"}]}}, ["/config/upstream/0", "urlTemplate"]),
    "endpoint with a path": ({"endpoint": "https://rt.example.com/signalr?x=1"}, ["/endpoint"]),
    "endpoint not a URL": ({"endpoint": "rt.example.com"}, ["/endpoint"]),
    "access key with ';'": ({"auth": {"accessKeys": ["abcdefghijklmnop;q"]}}, ["/auth/accessKeys/0"]),
    "short access key": ({"auth": {"accessKeys": ["short"]}}, ["/auth/accessKeys/0", "minLength"]),
    "cluster secret with spaces": ({"auth": {"clusterSecret": "not a visible ascii secret"}}, ["/auth/clusterSecret"]),
    "bad anti-affinity": ({"edge": {"antiAffinity": "strict"}}, ["/edge/antiAffinity", "soft", "hard", "none"]),
    "bad service type": ({"service": {"type": "External"}}, ["/service/type"]),
    "port out of range": ({"service": {"port": 70000}}, ["/service/port", "maximum"]),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy"]),
    "bad resource quantity": ({"edge": {"resources": {"limits": {"memory": "lots"}}}}, ["/edge/resources/limits/memory"]),
    "pdb maxUnavailable zero": ({"control": {"pdb": {"maxUnavailable": 0}}}, ["/control/pdb/maxUnavailable"]),
    "bad scrape interval": ({"metrics": {"serviceMonitor": {"enabled": True, "interval": "often"}}},
                            ["/metrics/serviceMonitor/interval"]),
    "autoscaling without a target": ({"edge": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
                                     ["/edge/autoscaling"]),
    "ingress without hosts": ({"ingress": {"enabled": True, "hosts": []}}, ["/ingress/hosts", "minItems"]),
    "ingress path not absolute": ({"ingress": {"enabled": True, "hosts": [
        {"host": "a.example", "paths": [{"path": "api", "pathType": "Prefix"}]}]}}, ["/ingress/hosts/0/paths/0/path"]),
    "label value not a string": ({"edge": {"podLabels": {"tier": 1}}}, ["/edge/podLabels/tier", "want string"]),
    # Checks in templates/validate.yaml.
    "max below min replicas": ({"edge": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
                               ["edge.autoscaling.maxReplicas (2) must be at least edge.autoscaling.minReplicas (5)"]),
    "rollout that cannot progress": ({"edge": {"strategy": {"maxSurge": 0, "maxUnavailable": 0}}},
                                     ["maxSurge and maxUnavailable cannot both be 0"]),
    "client timeout not above keep-alive": ({"config": {"clientTimeout": 15, "keepAliveInterval": 15}},
                                            ["config.clientTimeout (15) must be longer than config.keepAliveInterval (15)"]),
    "existing secret and keys": ({"auth": {"existingSecret": "keys", "accessKeys": ["0123456789abcdefghij"]}},
                                 ["auth.existingSecret is set"]),
    "unknown engine": ({"engine": "etcd"}, ["/engine"]),
    "redis url not redis:// or rediss://": ({"engine": "redis", "redis": {"url": "http://redis:6379"}}, ["/redis/url"]),
    "redis engine without a Redis": ({"engine": "redis"}, ["engine redis needs exactly one of redis.url"]),
    "redis engine with both": ({"engine": "redis", "redis": {"url": "redis://a:1", "clusterUrls": ["redis://b:2"]}},
                               ["engine redis needs exactly one of redis.url"]),
    "a Redis without the redis engine": ({"redis": {"url": "redis://a:1"}}, ["need engine: redis"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_rejected(case):
    values, words = BAD_VALUES[case]
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as failure:
        render(values)
    message = str(failure.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    assert len(message) < 600, message


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_good_values_pass_the_schema(name):
    chart().validate_schema(chart().merge_values(VALUE_SETS[name] or None))


def test_schema_describes_every_default():
    """Every key of values.yaml is in the schema (additionalProperties is false where keys are
    known), so the schema rejects typos rather than ignoring them."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def walk(value, node, path):
        if not isinstance(value, dict) or node.get("type") != "object" or "properties" not in node:
            return
        for key, child in value.items():
            assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
            walk(child, node["properties"][key], f"{path}.{key}")

    walk(chart().values, schema, "")
    assert schema["additionalProperties"] is False
