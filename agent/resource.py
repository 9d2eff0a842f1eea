"""The resource describing this process: service, host, process, container, Kubernetes."""

from __future__ import annotations

import os
import re
import socket
import sys
import uuid

from tracehouse.agent.otlp_wire import valid
from tracehouse.agent.snapshot_redact import mask_argv

_CONTAINER_ID = re.compile(r"([0-9a-f]{64})")
_K8S_ENV = {"k8s.pod.name": ("POD_NAME", "KUBERNETES_POD_NAME", "K8S_POD_NAME"),
            "k8s.namespace.name": ("POD_NAMESPACE", "KUBERNETES_NAMESPACE", "K8S_NAMESPACE"),
            "k8s.node.name": ("NODE_NAME", "KUBERNETES_NODE_NAME", "K8S_NODE_NAME")}


def container_id(proc_self: str = "/proc/self") -> str | None:
    """Container id from ``cgroup`` (v1, and v2 with systemd scopes) or ``mountinfo`` (v2)."""
    for name in ("cgroup", "mountinfo"):
        try:
            # bytes: a mount point is any bytes, not UTF-8 text (one such path made start() raise
            # UnicodeDecodeError into the host); container ids are hex
            with open(os.path.join(proc_self, name), "rb") as fh:
                text = fh.read(4 << 20).decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            if name == "mountinfo" and "/containers/" not in line and "/docker/" not in line \
                    and "/pods/" not in line:
                continue
            if name == "mountinfo" and ("/etc/hostname" not in line and "/etc/hosts" not in line
                                        and "/etc/resolv.conf" not in line):
                continue
            m = _CONTAINER_ID.search(line)
            if m:
                return m.group(1)
    return None


def k8s_attributes(environ=os.environ) -> dict[str, str]:
    out = {}
    for attr, names in _K8S_ENV.items():
        for n in names:
            if environ.get(n):
                out[attr] = environ[n]
                break
    if "k8s.pod.name" not in out and environ.get("KUBERNETES_SERVICE_HOST") and environ.get("HOSTNAME"):
        out["k8s.pod.name"] = environ["HOSTNAME"]
    return out


def process_attributes() -> dict[str, object]:
    return {
        "service.instance.id": str(uuid.uuid4()),
        "process.pid": os.getpid(),
        "process.parent_pid": os.getppid(),
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": ".".join(map(str, sys.version_info[:3])),
        "process.executable.path": sys.executable,
        "process.command_args": mask_argv(list(sys.argv)[:32]),
    }


def attributes(service: str, extra: dict[str, str], proc_self: str = "/proc/self") -> dict[str, object]:
    """All resource attributes; ``extra`` (OTEL_RESOURCE_ATTRIBUTES) wins over detected values."""
    from tracehouse.agent import __version__

    attrs: dict[str, object] = {
        "service.name": service,
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
        "telemetry.distro.name": "tracehouse",
        "telemetry.distro.version": __version__,
        "host.name": socket.gethostname(),
        "os.type": sys.platform,
    }
    attrs.update(process_attributes())
    cid = container_id(proc_self)
    if cid:
        attrs["container.id"] = cid
    attrs.update(k8s_attributes())
    attrs.update(extra)
    attrs["service.name"] = service
    # an argument, a path or an environment value that is not UTF-8 (decoded with surrogateescape):
    # the SDK's log encoder logged a traceback for it at every export and dropped it
    return {valid(k): [valid(x) for x in v] if isinstance(v, list) else valid(v) if isinstance(v, str) else v
            for k, v in attrs.items()}


def build(service: str, extra: dict[str, str]):
    from opentelemetry.sdk.resources import Resource

    return Resource(attributes(service, extra))
