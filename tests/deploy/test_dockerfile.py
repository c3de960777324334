"""deploy/docker/Dockerfile: hadolint (every finding fails), the image's contract with the chart
(binary path, user, ports, volume, env defaults, health check) and the build context that
.dockerignore leaves (the Cargo workspace, nothing else). No Docker engine runs here, so the
image itself is not built; the health-check script runs against a real node in test_wiring.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from chartlib import ROOT, Rendered, container
from podsim import DOCKERFILE, dockerfile_runtime

HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(stage: int | None = None) -> list[tuple[str, str]]:
    info = dockerfile_runtime()
    if stage is None:
        return info["instructions"]
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            if word.upper() == "FROM":
                stages.append([])
            if stages:
                stages[-1].append((word.upper(), rest.strip()))
    return stages[stage]


def test_hadolint_is_clean():
    out = subprocess.run([str(HADOLINT), "--config", str(DOCKERFILE.parent / "hadolint.yaml"), "--format", "tty",
                          "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_hadolint_catches_problems(tmp_path):
    """The linter really runs: a Dockerfile with known faults fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\nUSER root\nCMD switchboard serve\n")
    out = subprocess.run([str(HADOLINT), "--config", str(DOCKERFILE.parent / "hadolint.yaml"), "--no-color", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3015", "DL3002", "DL3025"):
        assert rule in out.stdout, (rule, out.stdout)


def test_multi_stage_release_build():
    info = dockerfile_runtime()
    assert info["stages"] == 2
    build = instructions(0)
    assert build[0][0] == "FROM" and re.match(r"rust:\$\{RUST_VERSION\}\S* AS build", build[0][1])
    assert re.search(r'^ARG RUST_VERSION=1\.95$', DOCKERFILE.read_text(), re.M)
    run = " ".join(rest for word, rest in build if word == "RUN")
    assert "cargo build --locked --release -p switchboard-server --bin switchboard" in run
    envs = " ".join(rest for kind, rest in build if kind == "ENV")
    assert "CARGO_PROFILE_RELEASE_STRIP=debuginfo" in envs, "the image's binary is built without debug info"
    runtime_from = instructions()[0][1]
    assert re.match(r"debian:\$\{DEBIAN_RELEASE\}-slim AS runtime", runtime_from), runtime_from


def test_runtime_contract_with_the_chart():
    info = dockerfile_runtime()
    last = info["instructions"]
    users = [rest for word, rest in last if word == "USER"]
    assert users == ["10001:10001"], "a numeric non-root user (runAsNonRoot can check it)"
    assert Rendered({}).values["podSecurityContext"]["runAsUser"] == 10001
    exposed = {int(p) for word, rest in last if word == "EXPOSE" for p in rest.split()}
    assert exposed == {8080, 7001, 9090}
    volumes = [json.loads(rest) for word, rest in last if word == "VOLUME"]
    assert volumes == [["/var/lib/switchboard"]]
    assert info["env"] == {"SWITCHBOARD_LISTEN": "0.0.0.0:8080", "SWITCHBOARD_INTERNAL_LISTEN": "0.0.0.0:9090",
                           "SWITCHBOARD_DATA_DIR": "/var/lib/switchboard"}
    assert info["entrypoint"] == ["/usr/local/bin/switchboard"] and info["cmd"] == ["serve"]
    health = next(rest for word, rest in last if word == "HEALTHCHECK")
    assert 'CMD ["/usr/local/bin/switchboard-healthcheck"]' in health
    assert any(word == "COPY" and "deploy/docker/healthcheck.sh /usr/local/bin/switchboard-healthcheck" in rest
               for word, rest in last)
    # The chart runs the binary where the image installs it, with the image's data directory.
    r = Rendered({})
    for workload in r.workloads().values():
        c = container(workload)
        assert c["command"] == [info["binary"]] == ["/usr/local/bin/switchboard"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["SWITCHBOARD_DATA_DIR"] == info["env"]["SWITCHBOARD_DATA_DIR"]
        assert env["SWITCHBOARD_INTERNAL_LISTEN"] == info["env"]["SWITCHBOARD_INTERNAL_LISTEN"]
        # The preStop hook's sleep exists in the runtime image (Debian's coreutils).
        hook = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        assert hook[:1] == ["/bin/sleep"]


def test_health_check_script_is_valid_bash():
    script = DOCKERFILE.parent / "healthcheck.sh"
    assert script.stat().st_mode & 0o111, "executable"
    assert subprocess.run(["bash", "-n", str(script)], timeout=10).returncode == 0


# ---------------------------------------------------------------- build context

def _dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def _match(pattern: str, path: str) -> bool:
    """Docker's matching: `*` and `?` within one path segment, `[...]` classes, `**` any number
    of segments; a pattern that matches a directory matches everything below it."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[":
            close = pattern.index("]", i + 1)
            regex, i = regex + pattern[i:close + 1].replace("[!", "[^"), close + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.fullmatch(regex + r"(?:/.*)?", path) is not None


def test_pattern_matching():
    assert _match("**", "a/b/c") and _match("**/target", "target") and _match("**/target", "a/b/target/x")
    assert _match("crates/**", "crates/a/b.rs") and not _match("crates/**", "cratesx/a")
    assert _match("*.md", "README.md") and not _match("*.md", "docs/README.md")
    assert _match("**/*.profraw", "a/b/c.profraw") and _match("deploy/docker/healthcheck.sh", "deploy/docker/healthcheck.sh")


def in_context(path: str) -> bool:
    included = True
    for negate, pattern in _dockerignore_patterns():
        if _match(pattern, path):
            included = negate
    return included


def test_build_context_is_the_cargo_workspace():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needed = ["Cargo.toml", "Cargo.lock", "deploy/docker/healthcheck.sh"]
    members = subprocess.run(["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert members.returncode == 0, members.stderr
    for package in json.loads(members.stdout)["packages"]:
        manifest = str(Path(package["manifest_path"]).relative_to(ROOT))
        needed.append(manifest)
        member_dir = str(Path(manifest).parent)
        needed += [f for f in tracked if f.startswith(member_dir + "/")]
    needed += [f for f in tracked if f.startswith("proto/")]
    missing = [f for f in needed if not in_context(f)]
    assert not missing, f"left out of the build context: {missing[:10]}"
    for path in ["target/debug/switchboard", "tests/node/node_modules/x/index.js", "examples/function-app/node_modules/a",
                 "tests/deploy/.venv/bin/python", "switchboard-data/access-key", ".git/HEAD", "crates/x/target/y"]:
        assert not in_context(path), path
    # Nothing the build does not need: the test suites, docs and the chart stay out.
    assert not any(in_context(f) for f in tracked if f.startswith(("tests/", "deploy/helm/", ".ci/", "scripts/")))
