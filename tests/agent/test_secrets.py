"""Credentials on the command line or in source lines never leave the process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from tracehouse.agent.snapshot_redact import MASK, mask_argv, mask_source_line
from tracehouse.agent.snapshot_threads import Limits, capture_threads

SCRIPT = """
import tracehouse.agent as a
from opentelemetry import trace
h = a.start(service="argv", endpoint={url!r}, instrument=False, metrics=False, logs=False, snapshots=False)
with trace.get_tracer("t").start_as_current_span("x"):
    pass
h.shutdown(5)
"""


def test_command_line_credentials_are_masked_in_the_exported_resource(tmp_path, sink):
    script = tmp_path / "app.py"
    script.write_text(SCRIPT.format(url=sink.url))
    args = ["--password=hunter2", "--db-token", "tok-123", "-pS3cretpw", "-p8080", "--port", "5000",
            "--dsn=postgresql://app:pgpass@db/shop", "api_key=AKIA999", "--name", "visible"]
    subprocess.run([sys.executable, str(script), *args], check=True, timeout=60, env=dict(os.environ))
    (res, _), = sink.wait(lambda s: s.spans())
    sent = list(res["process.command_args"].values)
    sent = [v.string_value for v in sent]
    assert sent[1:] == ["--password=" + MASK, "--db-token", MASK, "-p" + MASK, "-p8080", "--port", "5000",
                        "--dsn=" + MASK, "api_key=" + MASK, "--name", "visible"]
    raw = repr([m for _, m, _ in sink.requests])
    for secret in ("hunter2", "tok-123", "S3cretpw", "pgpass", "AKIA999"):
        assert secret not in raw


def test_argv_url_passwords_and_separate_values():
    assert mask_argv(["x", "--url", "https://u:pw@h/x", "--secret", "s"]) == \
        ["x", "--url", f"https://u:{MASK}@h/x", "--secret", MASK]


def test_snapshot_source_lines_are_masked_like_locals():
    ready, release = threading.Event(), threading.Event()

    def worker():
        ready.set()
        api_key = "sk-live-abcdef" if release.wait(10) else None  # noqa: F841 - the line a snapshot shows
        return

    t = threading.Thread(target=worker, name="holder")
    t.start()
    ready.wait(5)
    try:
        snap = capture_threads(Limits(), with_locals=False)
    finally:
        release.set()
        t.join(5)
    lines = [f["code"] for g in snap["threads"] for f in g["stack"]]
    assert any(line.startswith("api_key = " + MASK) for line in lines), lines
    assert not any("sk-live-abcdef" in line for line in lines)


def test_source_line_rules():
    assert mask_source_line('self.db_password = "x"') == "self.db_password = " + MASK
    assert mask_source_line('headers["Authorization"] = "Bearer abcdefgh"') == 'headers["Authorization"] = ' + MASK
    assert "pw" not in mask_source_line('conn = connect("postgres://u:pw@h/db", password="pw")').replace("postgres", "")
    assert mask_source_line("total = price * qty") == "total = price * qty"


def test_source_lines_are_read_as_python_not_as_key_value_text():
    # code that merely names a counter is left alone; a compared secret is masked whole
    assert mask_source_line("tokens_used = 5") == "tokens_used = 5"
    assert mask_source_line("tokens_used = count_tokens(text)") == "tokens_used = count_tokens(text)"
    assert mask_source_line('if password == "x":') == f"if password == {MASK}:"
    assert mask_source_line('if "hunter2" == password or token != "abc":') == \
        f"if {MASK} == password or token != {MASK}:"
    assert mask_source_line('cfg = {"password": "p4ss", "user": "bob"}') == f'cfg = {{"password": {MASK}, "user": "bob"}}'
    assert mask_source_line("return fetch(url, token=tok, timeout=5)") == f"return fetch(url, token={MASK}, timeout=5)"
    assert mask_source_line('password: str = "abc"') == f"password: str = {MASK}"
    assert mask_source_line('db.login(user, password or "default-pw")') == f"db.login(user, password or {MASK})"
    assert mask_source_line('x = "password=abc&user=x"') == f'x = "password={MASK}&user=x"'  # inside a literal
    assert mask_source_line("password = input()  # was hunter2") == f"password = {MASK}"
    # not Python on its own (a line of a multi-line string): masked as text
    assert mask_source_line('"""password=abc') == f'"""password={MASK}'
