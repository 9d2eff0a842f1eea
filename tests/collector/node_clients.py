"""The npm packages of the real OpenTelemetry JS clients (tests/collector/js: package.json and its
lockfile). .ci/run installs them with ``npm ci``; ``node_project`` does the same when one is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

JS = Path(__file__).parent / "js"
NEEDED = ("@opentelemetry/exporter-trace-otlp-grpc", "@opentelemetry/exporter-trace-otlp-http", "esbuild")


def node_project() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the JS client tests (Debian: nodejs, npm)"
    if not all((JS / "node_modules" / p).is_dir() for p in NEEDED):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True, timeout=300)
    return JS


def bundle_for_browser(entry: str, out: Path) -> Path:
    """``js/<entry>`` and what it imports as one script for a page (the packages' browser builds)."""
    js = node_project()
    subprocess.run([str(js / "node_modules" / ".bin" / "esbuild"), entry, "--bundle", "--platform=browser",
                    "--format=iife", f"--outfile={out}", "--log-level=warning"], cwd=js, check=True, timeout=60)
    return out
