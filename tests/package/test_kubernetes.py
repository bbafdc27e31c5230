"""packaging/kubernetes/: the manifests against Kubernetes' own OpenAPI schemas
(kubernetes-validate, strict: an unknown or misplaced field fails), the policy
ConfigMap against policies/default.toml, and the DaemonSet's command line
against enforcer's own parser.

The validator is a PyPI package with the schemas of every Kubernetes release
inside; packaging/dev-setup installs it in .venv-k8s (a venv of its own: it
needs a newer jsonschema than Debian's, which the project's .venv keeps).
Without it the schema test is skipped, saying how to get it, except under CI
(CI=true), where dev-setup has installed it and its absence is a failure.
No cluster runs here: scheduling, the kubelet's ConfigMap updates and the
probes themselves are not exercised (docs/kubernetes.md, "What is not tested").
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

from enforcer.cli import build_parser
from enforcer.parse import load_policy

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "packaging" / "kubernetes"
#: The oldest release whose schema has every field the DaemonSet uses (appArmorProfile: 1.30).
OLDEST_KUBERNETES = "1.30.0"


def validator() -> Optional[str]:
    local = REPO / ".venv-k8s" / "bin" / "kubernetes-validate"
    return str(local) if local.exists() else shutil.which("kubernetes-validate")


def resources() -> List[Path]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


def documents() -> Dict[str, dict]:
    return {doc["kind"] + "/" + doc["metadata"]["name"]: doc
            for path in resources() for doc in yaml.safe_load_all(path.read_text())}


def daemonset() -> dict:
    return documents()["DaemonSet/enforcer"]


def agent_container() -> dict:
    (container,) = daemonset()["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture
def kubernetes_validate() -> str:
    found = validator()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubernetes-validate is missing under CI: packaging/dev-setup installs it in .venv-k8s")
        pytest.skip("kubernetes-validate not installed (packaging/dev-setup makes .venv-k8s with it)")
    return found


def run_validator(binary: str, paths: List[Path], version: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "--strict", "-k", version, *map(str, paths)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, None])
def test_every_manifest_validates_against_the_kubernetes_schema(kubernetes_validate, version) -> None:
    paths = resources()
    version = version or subprocess.run([kubernetes_validate, "--version"], capture_output=True,
                                        text=True, check=True).stdout.split()[-1]
    result = run_validator(kubernetes_validate, paths, version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(re.findall(r" passed for resource ", result.stdout)) == len(paths), result.stdout


def test_the_validator_rejects_a_misplaced_field(kubernetes_validate, tmp_path) -> None:
    # the check above is worth something only if a mistake fails it
    broken = (K8S / "daemonset.yaml").read_text().replace("      hostPID: true", "      hostPid: true")
    assert broken != (K8S / "daemonset.yaml").read_text()
    (tmp_path / "daemonset.yaml").write_text(broken)
    result = run_validator(kubernetes_validate, [tmp_path / "daemonset.yaml"], OLDEST_KUBERNETES)
    assert result.returncode != 0 and "hostPid" in result.stdout + result.stderr


def test_the_policy_configmap_is_the_default_policy_verbatim() -> None:
    script = runpy.run_path(str(K8S / "policy-configmap"))
    default = (REPO / "policies/default.toml").read_text()
    assert (K8S / "policy-configmap.yaml").read_text() == script["render"](default, "policies/default.toml"), \
        "regenerate: packaging/kubernetes/policy-configmap > packaging/kubernetes/policy-configmap.yaml"
    assert documents()["ConfigMap/enforcer-policy"]["data"]["policy.toml"] == default


def test_the_allow_d_configmap_holds_only_drop_ins_that_check(tmp_path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text((REPO / "policies/default.toml").read_text())
    (tmp_path / "allow.d").mkdir()
    data = documents()["ConfigMap/enforcer-allow-d"].get("data") or {}
    for name, text in data.items():
        assert name.endswith(".toml"), f"{name}: allow.d reads only *.toml"
        (tmp_path / "allow.d" / name).write_text(text)
    load_policy(str(policy))  # raises PolicyError naming the drop-in


def test_the_agent_command_line_is_one_enforcer_accepts() -> None:
    container = agent_container()
    env = {item["name"]: item["value"] for item in container["env"]}
    argv = container["command"][1:] + [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
                                       for arg in container["args"]]
    args = build_parser().parse_args(argv)
    assert (args.events, args.watch_policy, args.mode) == ("stdout", "on", "audit")
    # the probes read the metrics file and the lock where the agent writes them
    assert Path(args.metrics_textfile).parent == Path("/run/enforcer")


def test_the_daemonset_runs_on_every_node_with_the_host_views_it_needs() -> None:
    spec = daemonset()["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    assert {"operator": "Exists"} in spec["tolerations"]
    mounts = {m["mountPath"]: m["name"] for m in agent_container()["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    for path in ("/sys/fs/bpf", "/sys/kernel/btf", "/sys/kernel/security", "/run/enforcer", "/var/cache/enforcer"):
        assert host_paths[mounts[path]] == path, f"{path} must be the node's own"
    configmaps = {v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
    assert configmaps[mounts["/etc/enforcer-k8s/policy"]] == "enforcer-policy"
    assert configmaps[mounts["/etc/enforcer-k8s/allow.d"]] == "enforcer-allow-d"
    security = agent_container()["securityContext"]
    assert security["privileged"] is False and security["capabilities"]["drop"] == ["ALL"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in agent_container(), probe


def test_a_rolling_update_never_runs_two_agents_on_a_node() -> None:
    rolling = daemonset()["spec"]["updateStrategy"]["rollingUpdate"]
    # the second agent would find the first's lock in the node's /run/enforcer and exit
    assert rolling == {"maxUnavailable": 1, "maxSurge": 0}
