"""deploy/: every manifest and compose file parses and references only images, ports, volumes,
secrets and config that exist; the Dockerfile builds the package the tests install; container
commands are real subcommands of the CLI. (No Docker engine or cluster runs here.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
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


def _created_secret_keys() -> dict[str, str]:
    """key → value template of the Secret that deploy/kubernetes/create-secrets.sh creates."""
    text = (DEPLOY / "kubernetes" / "create-secrets.sh").read_text()
    return dict(re.findall(r'^put ([\w-]+) "([^"]*)"$', text, re.M))


def _cli_ok(args: list[str]) -> None:
    """The container's arguments parse as a real tracehouse command."""
    parser = build_parser()
    if args[:1] == ["alerts"]:
        from tracehouse.alerts_cli import build_parser as alerts_parser

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
    assert re.search(r"^EXPOSE 4317 4318 8080$", text, re.M)
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
            assert container in ("4317", "4318", "8080") and host == container
        assert "healthcheck" in svc or svc.get("command") in (["migrate"],) or name == "demo"
    assert any(s.get("build", {}).get("dockerfile") == "deploy/Dockerfile" for s in services.values())


def _check_container(c: dict, vols: dict, secrets: dict, configmaps: dict) -> None:
    """Our image, a valid command line, resource requests, and every port, secret, volume and
    configuration file it names defined."""
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


def test_kubernetes_references_exist():
    docs = _all_k8s()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    secrets = {"tracehouse-secrets": set(_created_secret_keys())}  # made by create-secrets.sh, never shipped
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
            _check_container(c, vols, secrets, configmaps)
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
    storage_url = _created_secret_keys()["storage-url"]
    assert storage_url.endswith("?cluster=" + chi["spec"]["configuration"]["clusters"][0]["name"])
    _, ch_secret, ch_key = chi["spec"]["configuration"]["users"]["tracehouse/k8s_secret_password"].split("/")
    assert ch_secret in secrets and ch_key in secrets[ch_secret]


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


# ---- secure by default: no shipped secret, and every listening role has authentication -------------

SECRET_WORDS = re.compile(r"token|secret|password|key", re.I)


def _roles(args: list[str]) -> tuple[str, ...]:
    return {"serve": ("collector", "dashboard", "alerts"), "collector": ("collector",), "dashboard": ("dashboard",),
            "alerts": ("alerts",)}.get(args[0], ())


def _dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        env.update(dict(p.split("=", 1) for p in shlex.split(line)))
    return env


def _settings(args: list[str], env: dict[str, str], config: str | None = None, tmp_path: Path | None = None):
    from tracehouse.cli import _flags
    from tracehouse.config import load_settings

    flags: dict = {}
    if args[0] in ("serve", "collector", "dashboard"):
        flags = _flags(build_parser().parse_args(args))
    cfg = None
    if config is not None:
        cfg = tmp_path / "tracehouse.yaml"
        cfg.write_text(config)
    return load_settings(flags, str(cfg) if cfg else None, environ=env)


def test_no_secret_ships_with_the_manifests():
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"change-?me|demo-ingest-token", text, re.I), path
    for d in _all_k8s():
        assert d["kind"] != "Secret", "create the Secret with create-secrets.sh, never ship one"
    for key, value in _created_secret_keys().items():
        assert "${" in value, (key, value)  # every value comes from the environment or is generated
    compose = (DEPLOY / "docker-compose.yml").read_text()
    for var, op in re.findall(r"\$\{(\w+)(:?[?-])", compose):
        assert op == ":?", f"{var} must be given by the operator (${{{var}:?...}}), not defaulted"
    assert not [k for k in _dockerfile_env() if SECRET_WORDS.search(k)]


def _pod_specs(doc: dict) -> list[dict]:
    """The pod specs a manifest makes: a Deployment's or Job's, and the operator's pod templates."""
    if doc["kind"] in ("Deployment", "Job"):
        return [doc["spec"]["template"]["spec"]]
    return [t["spec"] for t in doc.get("spec", {}).get("templates", {}).get("podTemplates", [])]


def test_every_container_has_a_memory_limit():
    """One pod cannot take a node's memory from the others. The ClickHouse and Keeper pod templates
    had requests only: ClickHouse then caps itself at 90% of the node's RAM, not of its own share."""
    seen = 0
    for d in _all_k8s():
        for spec in _pod_specs(d):
            for c in spec["containers"]:
                res = c.get("resources", {})
                assert "memory" in res.get("requests", {}), (d["metadata"]["name"], c["name"])
                limit, request = res.get("limits", {}).get("memory"), res["requests"]["memory"]
                assert limit, f"{d['metadata']['name']}/{c['name']} has no memory limit"
                assert _bytes(limit) >= _bytes(request), (d["metadata"]["name"], c["name"])
                seen += 1
    assert seen >= 6  # collector, dashboard, alerts, migrate, keeper, clickhouse


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


FAKE_KUBECTL = r"""#!/bin/sh
# stands in for kubectl: records its arguments; for create secret --from-file=DIR, copies DIR's files
printf '%s\n' "$*" >>"$FAKE_LOG"
for a in "$@"; do
  case "$a" in
    --from-file=*) d=${a#--from-file=}; ls -ld "$d" >>"$FAKE_MODES"; ls -l "$d" >>"$FAKE_MODES"
                   mkdir -p "$FAKE_OUT"; cp "$d"/* "$FAKE_OUT"/; echo "$d" >"$FAKE_DIR";;
  esac
done
case "$1" in get) exit 1;; esac
exit 0
"""


def _run_create_secrets(tmp_path: Path, given: dict[str, str]) -> tuple[str, dict[str, str], list[str], Path]:
    """Runs create-secrets.sh with a fake kubectl: (kubectl's arguments, the Secret's files, their
    `ls -l` lines (directory first), the directory they were read from)."""
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TMPDIR=str(tmp_path), **given,
               FAKE_LOG=str(tmp_path / "argv"), FAKE_MODES=str(tmp_path / "modes"), FAKE_OUT=str(tmp_path / "out"),
               FAKE_DIR=str(tmp_path / "dir"))
    r = subprocess.run(["sh", str(DEPLOY / "kubernetes" / "create-secrets.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    argv = (tmp_path / "argv").read_text()
    out = tmp_path / "out"
    created = {p.name: p.read_text() for p in out.iterdir()} if out.exists() else {}
    modes = (tmp_path / "modes").read_text().splitlines() if (tmp_path / "modes").exists() else []
    used = Path((tmp_path / "dir").read_text().strip()) if (tmp_path / "dir").exists() else tmp_path / "none"
    return argv, created, modes, used


def test_create_secrets_passes_no_secret_as_an_argument(tmp_path):
    """create-secrets.sh gave every secret to kubectl as --from-literal=key=value: arguments, which
    every user of the machine sees in `ps` while kubectl runs (and audit logs keep). The values now
    reach kubectl as files only their owner can read, exactly as given (no trailing newline), in a
    directory removed afterwards."""
    import stat

    given = {"CLICKHOUSE_PASSWORD": "chpass-0123456789abcdef", "TRACEHOUSE_INGEST_TOKEN": "ingest-0123456789abcdef",
             "TRACEHOUSE_ADMIN_TOKEN": "admin-0123456789abcdef", "TRACEHOUSE_SECRET_KEY": "session-0123456789abcdef"}
    argv, created, modes, used = _run_create_secrets(tmp_path, given)
    assert "create secret generic tracehouse-secrets" in argv
    for name, value in given.items():
        assert value not in argv, f"{name} is an argument of kubectl"
    assert "0123456789abcdef" not in argv
    assert set(created) == set(_created_secret_keys())
    assert created["clickhouse-password"] == given["CLICKHOUSE_PASSWORD"]
    assert created["ingest-tokens"] == given["TRACEHOUSE_INGEST_TOKEN"]
    assert created["api-tokens"] == "admin:admin:" + given["TRACEHOUSE_ADMIN_TOKEN"]
    assert created["session-key"] == given["TRACEHOUSE_SECRET_KEY"]
    assert created["storage-url"] == ("clickhouse://tracehouse:chpass-0123456789abcdef@clickhouse-tracehouse."
                                      "tracehouse.svc:9000/tracehouse?cluster=tracehouse")
    assert modes[0].startswith("drwx------"), modes[0]  # the directory, then its files
    assert all(m.startswith("-rw-------") for m in modes[1:] if not m.startswith("total")), modes
    assert not used.exists()  # removed on exit
    assert stat.S_IMODE((DEPLOY / "kubernetes" / "create-secrets.sh").stat().st_mode) & 0o100


def test_create_secrets_encodes_the_clickhouse_password_in_the_storage_url(tmp_path):
    """A CLICKHOUSE_PASSWORD given to the script went into the storage URL as it was: one holding
    '/', '?', '#', '@', ':' or '%' gave a URL naming another host, port or password (every role then
    failed to start, or logged part of the password in its error). It is percent-encoded now, and the
    URL parses back to the very password ClickHouse gets."""
    from tracehouse.storage import parse_storage_url

    password = "pa/ss?w#rd@x:%2Fy"
    argv, created, _, _ = _run_create_secrets(tmp_path, {"CLICKHOUSE_PASSWORD": password})
    assert password not in argv and "pa/ss" not in argv
    assert created["clickhouse-password"] == password
    url = parse_storage_url(created["storage-url"])
    assert (url.user, url.password, url.host, url.port, url.database, url.cluster) == (
        "tracehouse", password, "clickhouse-tracehouse.tracehouse.svc", 9000, "tracehouse", "tracehouse")


def test_every_listening_role_as_deployed_has_authentication(tmp_path):
    """The shipped image alone refuses to start; compose and Kubernetes pass the check that
    ``tracehouse`` runs before listening (secrets stand in as placeholders)."""
    from tracehouse.exposure import ExposureError, check

    image_env = _dockerfile_env()
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), re.M).group(1))
    with pytest.raises(ExposureError, match=r"(?s)collector \(port 4318\).*dashboard \(port 8080\)"):
        check(_settings(cmd, image_env), _roles(cmd))

    compose = yaml.safe_load(re.sub(r"\$\{(\w+):\?[^}]*\}", r"from-\1",
                                    (DEPLOY / "docker-compose.yml").read_text()))
    checked = 0
    for svc in compose["services"].values():
        if svc.get("image") == OUR_IMAGE and _roles(svc.get("command", cmd)):
            args = svc.get("command", cmd)
            check(_settings(args, dict(image_env, **svc.get("environment", {}))), _roles(args))
            checked += 1
    assert checked >= 1

    docs = _all_k8s()
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["tracehouse.yaml"]
    listening = 0
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            env = dict(image_env)
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                env[e["name"]] = f"from-secret-{ref['key']}" if ref else e["value"]
            settings = _settings(c["args"], env, config, tmp_path)
            assert settings.host == "0.0.0.0"
            check(settings, _roles(c["args"]))
            if {"collector", "dashboard", "alerts"} & set(_roles(c["args"])):
                listening += 1
            if "dashboard" in _roles(c["args"]) and d["spec"]["replicas"] > 1:
                assert settings.secret_key, "dashboard replicas need one session key"
    assert listening == 3


def test_the_image_health_check_passes_for_a_collector_only_container(tmp_path):
    """The image's HEALTHCHECK asked only the dashboard's port: a container running
    ``tracehouse collector`` (no dashboard) was always unhealthy. It runs the same command as the
    Dockerfile, against a real collector and then against nothing."""
    from testkit.servers import free_port, wait_port

    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    check = json.loads(re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.M).group(1))
    otlp, http, grpc_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEHOUSE_")}
    env.update(TRACEHOUSE_HOST="127.0.0.1", TRACEHOUSE_OTLP_PORT=str(otlp), TRACEHOUSE_HTTP_PORT=str(http),
               TRACEHOUSE_OTLP_GRPC_PORT=str(grpc_port), TRACEHOUSE_STORAGE=f"chdb://{tmp_path}/data",
               TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"))
    check[0] = sys.executable  # the image's python
    server = subprocess.Popen([sys.executable, "-m", "tracehouse.cli", "collector"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_port(otlp, 90)
        assert subprocess.run(check, env=env, timeout=10).returncode == 0
    finally:
        server.terminate()
        server.wait(60)
    assert subprocess.run(check, env=env, timeout=10).returncode == 1


def test_our_pods_run_as_the_image_user_without_privileges_on_a_read_only_root():
    """The manifests set no security context: a cluster whose policy does not force one ran our
    containers with the runtime's defaults (privilege escalation allowed, every default capability,
    a writable root file system), and an admission policy requiring non-root pods refused them
    (the image names its user, not its uid)."""
    uid = re.search(r"useradd .*--uid (\d+)", (DEPLOY / "Dockerfile").read_text()).group(1)
    pods = 0
    for d in _all_k8s():
        if d["kind"] not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        ours = [c for c in pod["containers"] if c["image"] == OUR_IMAGE]
        if not ours:
            continue
        pods += 1
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True and str(psc.get("runAsUser")) == uid, d["metadata"]["name"]
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in ours:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True, c["name"]
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp_volumes, c["name"]  # tempfile's writes, with the root read-only
            # the collector's buffer (its WAL) is a writable volume too
            if "collector" in c["args"]:
                assert any(m.get("readOnly") is not True and "buffer" in m["mountPath"] for m in c["volumeMounts"])
    assert pods == 4  # collector, dashboard, alerts, migrate


def test_long_running_roles_have_time_to_start_before_liveness_counts():
    """Each role migrates before it listens; on a cluster the first start can take longer than the
    liveness probe's default window (three misses, 10 s apart), which restarted the pod in a loop."""
    for d in _all_k8s():
        if d["kind"] != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["image"] != OUR_IMAGE:
                continue
            sp = c.get("startupProbe")
            assert sp and sp["httpGet"]["path"] == "/healthz", c["name"]
            assert sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) >= 300, c["name"]


#: the settings of the state files a role keeps across a restart (what the store did not take yet)
_STATE_DIRS = {"dashboard": ["TRACEHOUSE_DASHBOARD_DIR"], "alerts": ["TRACEHOUSE_ALERTS_DIR"],
               "serve": ["TRACEHOUSE_DASHBOARD_DIR", "TRACEHOUSE_ALERTS_DIR"]}


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def test_the_state_files_of_each_role_go_to_a_writable_volume():
    """Sign-outs, alert changes and notifications the store did not take are kept in files (by
    default next to the working directory): on a read-only root file system, or in a container's
    own layer, a restart lost them and a signed-out session came back."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    env = dict(re.findall(r"(TRACEHOUSE_\w+)=(\S+)", dockerfile))
    image_volumes = json.loads(re.search(r"^VOLUME (\[.*\])$", dockerfile, re.M).group(1))
    for name in _STATE_DIRS["serve"]:
        assert _under(env[name], image_volumes), (name, env.get(name))
        assert re.search(r"install -d -o tracehouse -g tracehouse[^\n]*" + re.escape(os.path.dirname(env[name])),
                         dockerfile), "the volume's directory belongs to the image's user"
    for d in _all_k8s():
        if d["kind"] != "Deployment":
            continue
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"]:
            wanted = _STATE_DIRS.get(c["args"][0], [])
            values = {e["name"]: e.get("value") for e in c.get("env", [])}
            writable = [m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")]
            for name in wanted:
                assert name in values and _under(values[name], writable), (d["metadata"]["name"], name)
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for svc in compose["services"].values():
        if svc.get("image") == OUR_IMAGE and svc.get("command", [""])[0] in _STATE_DIRS:
            mounted = [v.split(":")[1] for v in svc.get("volumes", []) if not v.endswith(":ro")]
            for name in _STATE_DIRS[svc["command"][0]]:
                assert _under(env[name], mounted), name
