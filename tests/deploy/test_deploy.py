"""The deployment files: Kubernetes manifests validated against the API schemas, KEDA objects
against the fields KEDA's CRDs require, and the hardening of the compose files checked by
running their Redis start commands on a real redis-server."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowherd.models.keys import DEFAULT_QUEUE
from tests.support.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = [ROOT / "deploy" / "docker-compose.yml", ROOT / "deploy" / "docker-compose.cluster.yml"]
K8S_VERSION = "1.30.0"
SECRET_KEYS = {"redis-password", "redis-url", "web-token"}

#: The fields of KEDA's v1alpha1 CRDs that these manifests use, with KEDA's requirements
#: (keda.sh_scaledobjects.yaml, keda.sh_triggerauthentications.yaml): trigger metadata values
#: are strings, scaleTargetRef needs a name, a secretTargetRef needs parameter, name and key.
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    }
                },
            }
        },
    },
}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in _docs(p)]


def _kind(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


@pytest.mark.parametrize(
    "path_doc",
    [
        pytest.param((p, d), id=f"{p.name}:{d['kind']}/{d.get('metadata', {}).get('name', '')}")
        for p, d in _manifests()
    ],
)
def test_manifest_is_valid(path_doc: tuple[Path, dict[str, Any]]) -> None:
    import jsonschema
    import kubernetes_validate

    _, doc = path_doc
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
    elif doc["kind"] == "Kustomization":
        listed = set(doc["resources"])
        assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
        assert all((K8S / r).exists() for r in listed)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_keda_scales_the_worker_deployment_on_the_rq_queue() -> None:
    from rq import Queue

    so = _kind("ScaledObject", "flowherd-worker")
    worker = _kind("Deployment", "flowherd-worker")
    assert so["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == Queue.redis_queue_namespace_prefix + DEFAULT_QUEUE
    host, port = trigger["metadata"]["address"].rsplit(":", 1)
    svc = _kind("Service", host)
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}
    auth = _kind("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password"}


def test_worker_stops_within_its_grace_period_and_probes_its_metrics_port() -> None:
    from flowherd.workers.worker import STOP_GRACE

    worker = _kind("Deployment", "flowherd-worker")
    spec = worker["spec"]["template"]["spec"]
    # a worker finishes its batch, or gives up STOP_GRACE s after Redis stops answering, and
    # the pool kills stragglers 2 s later: the grace period must cover that and a batch
    assert spec["terminationGracePeriodSeconds"] >= STOP_GRACE + 2 + 30
    (c,) = spec["containers"]
    args = c["args"]
    port = int(args[args.index("--metrics-port") + 1])
    assert {p["containerPort"] for p in c["ports"]} == {port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] in ("metrics", port)
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]


@pytest.mark.parametrize(
    ("deployment", "program"), [("flowherd-worker", "workers"), ("flowherd-web", "reporter")]
)
def test_container_arguments_are_accepted_by_the_cli(deployment: str, program: str) -> None:
    """The arguments in the manifests parse with today's CLI (an option renamed breaks this)."""
    import click

    from flowherd.reporter.cli.main import main as reporter_main
    from flowherd.workers.cli import main as workers_main

    (c,) = _kind("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert args[0] == program
    group = workers_main if program == "workers" else reporter_main
    sub = group.commands[args[1]]
    ctx = sub.make_context(args[1], list(args[2:]))  # raises click.UsageError on a bad option
    assert isinstance(ctx, click.Context)


def test_no_password_in_any_manifest_command_line() -> None:
    for path, doc in _manifests():
        for c in _containers(doc):
            line = " ".join(c.get("command", []) + c.get("args", []))
            assert "--requirepass" not in line and not re.search(r"(^|\s)-a\s", line), path
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "flowherd" and ref["key"] in SECRET_KEYS
                else:
                    assert "password" not in env["name"].lower() or "FILE" in env["name"]


def test_redis_statefulset_persists_like_deploy_redis_conf() -> None:
    conf = _kind("ConfigMap", "flowherd-redis")["data"]["redis.conf"]
    ref = (ROOT / "deploy" / "redis.conf").read_text()
    for directive in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"):
        assert directive in ref and directive in conf
    sts = _kind("StatefulSet", "flowherd-redis")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (redis,) = sts["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in redis["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data" and "dir /data" in conf


def test_compose_files_publish_redis_on_loopback_only_and_pass_no_password() -> None:
    for path in COMPOSE:
        text = path.read_text()
        assert "FLOWHERD_REDIS_PASSWORD" not in text and "--requirepass" not in text
        assert not re.search(r"redis-cli[^\n]*\s-a\s", text)
        services = yaml.safe_load(text)["services"]
        for name, svc in services.items():
            for port in svc.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), f"{path.name}: {name} publishes {port}"
            for value in (svc.get("environment") or {}).values():
                assert "redis://:" not in str(value), (
                    f"{path.name}: {name} has a URL with a password"
                )


def test_dockerfile_copies_every_package() -> None:
    # the package's folder and every role folder it links to (flowherd/models -> ../models, ...)
    links = [p for p in (ROOT / "flowherd").iterdir() if p.is_symlink()]
    top = {"flowherd"} | {p.resolve().name for p in links}
    assert {"models", "workers", "producer", "reporter"} <= top
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", text, re.M))
    assert copied == top
    assert "-c constraints.txt" in text and (ROOT / "constraints.txt").exists()


def _compose_redis_command(path: Path, service: str) -> str:
    svc = yaml.safe_load(path.read_text())["services"][service]
    cmd = svc["command"]
    assert cmd[:2] == ["sh", "-c"]
    return str(cmd[2]).replace("$$", "$")  # compose's escape for a literal $


@pytest.mark.redis
def test_compose_redis_start_keeps_the_password_out_of_ps(tmp_path: Path) -> None:
    """The compose file's own start command, run with a real redis-server: the server requires
    the password, and no process's arguments contain it."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server/redis-cli missing: run scripts/install.sh")
    password = "s3cret-" + tmp_path.name
    secret = tmp_path / "redis_password"
    secret.write_text(password + "\n")
    port = free_port()
    conf = tmp_path / "redis.conf"
    base = (ROOT / "deploy" / "redis.conf").read_text().replace("dir /data", f"dir {tmp_path}")
    conf.write_text(base + f"\nport {port}\nbind 127.0.0.1\n")
    cmd = (
        _compose_redis_command(COMPOSE[0], "redis")
        .replace("/run/secrets/redis_password", str(secret))
        .replace("/etc/redis/redis.conf", str(conf))
        .replace("/tmp/auth.conf", str(tmp_path / "auth.conf"))
    )
    proc = subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        cli = ["redis-cli", "-p", str(port)]

        def up() -> bool:
            r = subprocess.run([*cli, "ping"], capture_output=True, text=True)
            return "NOAUTH" in r.stdout + r.stderr

        wait_until(up, timeout=20, what="redis-server from the compose command")
        ok = subprocess.run(
            [*cli, "ping"], capture_output=True, text=True, env={"REDISCLI_AUTH": password}
        )
        assert ok.stdout.strip() == "PONG"
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert password not in ps
        assert "redis-server" in ps
        assert oct((tmp_path / "auth.conf").stat().st_mode & 0o777) == "0o600"
    finally:
        proc.terminate()
        proc.wait(10)


def test_k8s_init_commands_are_valid_shell() -> None:
    for path, doc in _manifests():
        for c in _containers(doc):
            if c.get("command", [])[:2] == ["sh", "-c"]:
                r = subprocess.run(["sh", "-n", "-c", c["command"][2]], capture_output=True)
                assert r.returncode == 0, f"{path.name} {c['name']}: {r.stderr!r}"
                assert shlex.split(c["command"][2])  # quotes balanced
