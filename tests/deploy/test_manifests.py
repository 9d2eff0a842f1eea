"""deploy/: every manifest and compose file parses and references only images, ports, volumes,
secrets and config that exist; the Dockerfile builds the package the tests install; container
commands are real subcommands of the CLI. (No Docker engine or cluster runs here.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from tracehouse.cli import build_parser
from tracehouse.storage.capabilities import capabilities_for
from tracehouse.storage.migrations import MIGRATIONS, Context
from tracehouse.storage.schema import render_views

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OUR_IMAGE = "tracehouse:0.1.0"
OFFICIAL = re.compile(r"^clickhouse/clickhouse-(server|keeper):\d+\.\d+$")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_k8s() -> list[dict]:
    return [d for p in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for d in _docs(p)]


def _cli_ok(args: list[str]) -> None:
    """The container's arguments parse as a real tracehouse command."""
    parser = build_parser()
    if args[:1] == ["alerts"]:
        from tracehouse.alerts.cli import build_parser as alerts_parser

        parser, args = alerts_parser(), args[1:]
    try:
        parser.parse_args(args)
    except SystemExit as e:  # argparse exits on an unknown command
        raise AssertionError(f"not a tracehouse command: {args}") from e


def test_dockerfile_builds_the_tested_package():
    text = (DEPLOY / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'pip wheel --no-cache-dir --wheel-dir /wheels ".[server]"' in text
    for folder in ("tracehouse", "agent", "collector", "storage", "dashboard", "alerts"):
        assert f"COPY {folder} ./{folder}" in text
        assert (ROOT / folder / "__init__.py").exists()
    for copied in re.findall(r"^COPY (\S+) ", text, re.M):
        if not copied.startswith("--"):
            assert (ROOT / copied).exists(), copied
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert OUR_IMAGE.endswith(version)
    assert re.search(r"^EXPOSE 4318 8080$", text, re.M)
    entry = re.search(r'^ENTRYPOINT \["(\w+)"\]', text, re.M).group(1)
    assert f'{entry} = "tracehouse.cli:main"' in pyproject
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    _cli_ok(cmd)
    assert "/healthz" in text


def test_compose_references_exist():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    volumes = set(compose.get("volumes", {}))
    for name, svc in services.items():
        image = svc.get("image")
        assert image == OUR_IMAGE or OFFICIAL.match(image or ""), (name, image)
        if image == OUR_IMAGE and "command" in svc:
            _cli_ok(svc["command"])
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).resolve().exists(), (name, src)
            else:
                assert src in volumes, (name, src)
        for p in svc.get("ports", []):
            host, container = p.split(":")
            assert container in ("4318", "8080") and host == container
        assert "healthcheck" in svc or svc.get("command") in (["migrate"],) or name == "demo"
    assert any(s.get("build", {}).get("dockerfile") == "deploy/Dockerfile" for s in services.values())


def test_kubernetes_references_exist():
    docs = _all_k8s()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    secrets = {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
               for d in docs if d["kind"] == "Secret"}
    configmaps = {d["metadata"]["name"]: set(d.get("data", {})) for d in docs if d["kind"] == "ConfigMap"}
    for d in docs:
        assert d["metadata"].get("namespace", "tracehouse") == "tracehouse"
        if d["kind"] not in ("Deployment", "Job"):
            continue
        spec = d["spec"]["template"]["spec"]
        if d["kind"] == "Deployment":
            assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            assert c["image"] == OUR_IMAGE
            _cli_ok(c["args"])
            assert "requests" in c["resources"]
            port_names = {p["name"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                if probe in c:
                    assert c[probe]["httpGet"]["port"] in port_names
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], ref
            for m in c.get("volumeMounts", []):
                assert m["name"] in vols
            args = c["args"]
            if "--config" in args:
                f = Path(args[args.index("--config") + 1]).name
                cm = next(v["configMap"]["name"] for v in vols.values() if "configMap" in v)
                assert f in configmaps[cm]
        for v in vols.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps
    for d in docs:
        if d["kind"] == "Service":
            sel = d["spec"]["selector"]
            targets = [x for x in docs if x["kind"] == "Deployment"
                       and sel.items() <= x["spec"]["template"]["metadata"]["labels"].items()]
            assert targets, d["metadata"]["name"]
            names = {p["name"] for t in targets for c in t["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            for p in d["spec"]["ports"]:
                assert p["targetPort"] in names
        if d["kind"] in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
            target = d["spec"].get("scaleTargetRef", {}).get("name") or d["metadata"]["name"]
            assert ("Deployment", target) in kinds
    collector = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "tracehouse-collector")
    assert collector["spec"]["replicas"] >= 2
    cfg = yaml.safe_load(configmaps and next(d for d in docs if d["kind"] == "ConfigMap")["data"]["tracehouse.yaml"])
    assert cfg["otlp_port"] == 4318 and cfg["http_port"] == 8080
    chi = next(d for d in docs if d["kind"] == "ClickHouseInstallation")
    layout = chi["spec"]["configuration"]["clusters"][0]["layout"]
    assert layout["shardsCount"] >= 2 and layout["replicasCount"] >= 2
    storage_url = next(d for d in docs if d["kind"] == "Secret")["stringData"]["storage-url"]
    assert storage_url.endswith("?cluster=" + chi["spec"]["configuration"]["clusters"][0]["name"])


@pytest.mark.parametrize("path", sorted((DEPLOY / "clickhouse").glob("*.xml")))
def test_clickhouse_configs_parse(path):
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    assert root.tag == "clickhouse"


def test_cluster_mode_ddl_is_replicated_and_distributed_by_trace_id():
    ctx = Context("tracehouse", capabilities_for("24.8"), "tracehouse", {"spans": 7})
    stmts = [s for m in MIGRATIONS for s in m.statements(ctx)]
    spans_local = next(s for s in stmts if "tracehouse.spans_local ON CLUSTER tracehouse" in s and "CREATE TABLE" in s)
    assert "ReplicatedMergeTree('/clickhouse/tables/{shard}/tracehouse/spans', '{replica}')" in spans_local
    dist = next(s for s in stmts if s.startswith("CREATE TABLE IF NOT EXISTS tracehouse.spans ON CLUSTER"))
    assert "Distributed(tracehouse, tracehouse, spans_local, cityHash64(trace_id))" in dist
    # spans arrive in a Null table whose views fill spans_local and every rollup (each deduplicates
    # a replayed block on its own); the cluster tests (tests/cluster/) prove the behaviour.
    views = render_views("tracehouse", "tracehouse")
    assert all("FROM tracehouse.spans_in" in v and "_local AS" in v for v in views)
    assert "ENGINE = Null" in next(s for s in stmts if "tracehouse.spans_in ON CLUSTER" in s)
    # bookkeeping tables have a replica on every node, under their own name, with no Distributed table
    replacing = next(s for s in stmts if "tracehouse.alert_state ON CLUSTER" in s and "CREATE TABLE" in s)
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/all/tracehouse/alert_state', '{shard}-{replica}', updated_ns)" in replacing
    assert not any("alert_state_local" in s for s in stmts)


def test_readme_commands_are_real():
    readme = (ROOT / "README.md").read_text()
    for line in re.findall(r"\.venv/bin/tracehouse ([^\n`]+)", readme):
        _cli_ok(shlex.split(line))
