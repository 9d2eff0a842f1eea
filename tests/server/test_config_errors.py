"""A configuration that cannot be used stops every command with one clear line and exit status 2,
never a Python traceback (an operator reads the container log, not the code)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(args: list[str], tmp_path, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TRACEHOUSE_")}
    e.update({"TRACEHOUSE_HOST": "127.0.0.1", "TRACEHOUSE_STORAGE": f"chdb://{tmp_path}/data", **env})
    return subprocess.run([sys.executable, "-m", "tracehouse.cli", *args], env=e, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


@pytest.mark.parametrize("command", [["collector"], ["dashboard"], ["serve"], ["migrate"], ["alerts", "run"]])
def test_an_unusable_configuration_file_is_a_clear_error_not_a_traceback(tmp_path, command):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("api_tokens: {ci: {token: s3cret-xyz, role: \"viewer}\n")
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes(b"host: caf\xe9\n")
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- host: 127.0.0.1\n")
    unreadable = tmp_path / "unreadable.yaml"
    unreadable.write_text("host: 127.0.0.1\n")
    unreadable.chmod(0)
    cases = [(tmp_path / "missing.yaml", "No such file"), (tmp_path, "Is a directory"),
             (bad_yaml, "not valid YAML"), (not_utf8, "not valid YAML"), (a_list, "top level must be a mapping")]
    if os.geteuid() != 0:  # root reads any file
        cases.append((unreadable, "Permission denied"))
    for path, reason in cases:
        for how in ({"args": ["--config", str(path)]}, {"env": {"TRACEHOUSE_CONFIG": str(path)}}):
            r = _run(command + how.get("args", []), tmp_path, **how.get("env", {}))
            assert r.returncode == 2, (path, how, r.stderr)
            assert "Traceback" not in r.stderr, r.stderr
            assert str(path) in r.stderr and reason in r.stderr, r.stderr
            assert "s3cret" not in r.stderr  # a YAML error names the line and column, never quotes it
