"""A small file system of its own for a test (a tmpfs, mounted as root, as .ci/run runs): a disk
that fills, runs out of inodes or turns read-only for real. A machine where it cannot be mounted
fails the test that needs it, as a missing server does: never a skip."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest


def mounted(tmp_path, options: str) -> Iterator[str]:
    """Mount a tmpfs with ``options`` (``size=8m``, ``nr_inodes=32``) under ``tmp_path``; yield its
    path and unmount it after."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (.ci/run runs the tests as root)")
    d = tmp_path / "fs"
    d.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True)
    if done.returncode:
        pytest.fail(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    yield str(d)
    subprocess.run(["umount", "-l", str(d)], check=False)
