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


BAD_VALUES = {  # setting → values it cannot take (from the environment or the file: logged, default kept)
    "log_level": ["verbose", "10"],  # logging.basicConfig raised ValueError at every command's start
    "decoder": ["nativ"],  # build_collector raised ValueError once the store was open
    "buffer_max_bytes": ["-1"],  # every OTLP request 503 and /readyz "buffer full", for ever
    "client_timeout_seconds": ["nan", "-5", "inf"],
    "query_timeout_s": ["nan", "inf"],  # every user query then failed converting it to max_execution_time
    "query_max_memory_bytes": ["-1", str(10**30)],  # every user query failed: the server refuses the setting
    "max_concurrent_requests": ["-1"],
    "otlp_port": ["70000", "-1"],
    "rate_limit_per_service": ["1e400"],
}


def test_values_no_setting_can_take_are_logged_and_the_default_kept(tmp_path, caplog):
    from tracehouse.config import Settings, load_settings

    defaults = Settings()
    for name, values in BAD_VALUES.items():
        for value in values:
            caplog.clear()
            s = load_settings(environ={"TRACEHOUSE_" + name.upper(): value})
            assert getattr(s, name) == getattr(defaults, name), (name, value)
            assert f"ignoring bad env value for {name}" in caplog.text, (name, value)
            cfg = tmp_path / "t.yaml"
            cfg.write_text(f"{name}: {value}\n")
            assert getattr(load_settings(config_file=str(cfg), environ={}), name) == getattr(defaults, name)
    s = load_settings(environ={"TRACEHOUSE_LOG_LEVEL": "DEBUG", "TRACEHOUSE_DECODER": "Python",
                               "TRACEHOUSE_ZIPKIN_PORT": "9411", "TRACEHOUSE_RATE_LIMIT_PER_SERVICE": "0"})
    assert (s.log_level, s.decoder, s.zipkin_port, s.rate_limit_per_service) == ("debug", "python", 9411, 0.0)


def test_a_flag_no_setting_can_take_stops_the_command_with_a_clear_error(tmp_path):
    from tracehouse.config import SettingsError, load_settings

    for flag, value in (("otlp_port", 70000), ("http_port", -1), ("otlp_grpc_port", 65536)):
        with pytest.raises(SettingsError, match=f"--{flag.replace('_', '-')}"):
            load_settings({flag: value}, environ={})
    r = _run(["collector", "--otlp-port", "70000"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--otlp-port: 70000 is not a port" in r.stderr, r.stderr


def test_a_bad_log_level_is_not_a_traceback(tmp_path):
    r = _run(["migrate"], tmp_path, TRACEHOUSE_LOG_LEVEL="verbose")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "ignoring bad env value for log_level" in r.stderr, r.stderr


@pytest.mark.parametrize("command", [["migrate"], ["alerts", "run"], ["collector"]])
def test_a_bad_storage_url_is_a_clear_error_in_every_command(tmp_path, command):
    """`serve`, `collector` and `dashboard` printed a bad storage URL's reason; `migrate` and
    `alerts run` raised it as a traceback (one whose last line, before the URL parser stopped
    quoting passwords, held part of the password)."""
    for url, reason in (("mysql://h/db", "unknown storage URL scheme"),
                        ("clickhouse://u:p@h:9000/db?secure=1", "unknown storage URL parameter"),
                        ("clickhouse://u:s3cr/et@h:9000/db", "percent-encode")):
        r = _run(command, tmp_path, TRACEHOUSE_STORAGE=url)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and reason in r.stderr, r.stderr
        assert "s3cr" not in r.stderr


def test_the_native_decoder_asked_for_with_a_server_store_is_a_clear_error(tmp_path, clickhouse_url):
    """A valid value in a combination that cannot run: the collector died with a ValueError
    traceback once the store was open."""
    r = _run(["collector"], tmp_path, TRACEHOUSE_STORAGE=clickhouse_url, TRACEHOUSE_DECODER="native",
             TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "native needs embedded chDB" in r.stderr, r.stderr


@pytest.mark.parametrize("command", [["dashboard"], ["serve"], ["migrate"], ["alerts", "run"]])
def test_a_clickhouse_server_that_cannot_be_reached_at_start_is_one_clear_line(tmp_path, command):
    """The collector alone starts and buffers instead (tests/collector/test_store_down_at_start.py)."""
    from testkit.servers import free_port

    # a port nothing listens on: the schema check at start cannot connect
    r = _run(command, tmp_path, TRACEHOUSE_STORAGE=f"clickhouse://default:@127.0.0.1:{free_port()}/db",
             TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "unavailable" in r.stderr and "start ClickHouse first" in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("command", [["collector"], ["dashboard"], ["serve"], ["migrate"], ["alerts", "run"]])
def test_an_embedded_store_another_process_has_open_is_one_clear_line(tmp_path, command):
    """A second process on the same chDB directory (two `tracehouse serve` with one TRACEHOUSE_STORAGE)
    stopped with the engine's 'Error initializing EmbeddedServer: .' under a traceback, which
    named neither the cause nor the process holding the directory."""
    data = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom tracehouse.storage import Store\n"
         f"s = Store.open({'chdb://' + str(data)!r})\nprint('open', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        r = _run(command, tmp_path, TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"))
        assert r.returncode == 2, r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        assert f"{data} is in use by process {holder.pid}" in r.stderr, r.stderr[-3000:]
    finally:
        holder.communicate("", timeout=60)
    # once the holder has gone, the directory opens again
    assert _run(["migrate"], tmp_path).returncode == 0


@pytest.mark.parametrize("command", [["collector"], ["dashboard"], ["serve"], ["migrate"], ["alerts", "run"]])
def test_a_clickhouse_server_that_refuses_the_user_at_start_is_one_clear_line(tmp_path, command, clickhouse_url):
    """A wrong user or password: every command printed a Python traceback and the server's stack
    trace (about 100 lines) and exited 1."""
    base = clickhouse_url.rsplit("/", 1)[0]
    wrong = base.replace("//default:@", "//nobody:s3cret-pw@")
    assert wrong != base
    r = _run(command, tmp_path, TRACEHOUSE_STORAGE=f"{wrong}/db", TRACEHOUSE_BUFFER_DIR=str(tmp_path / "buffer"),
             TRACEHOUSE_OTLP_GRPC_PORT="0")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Stack trace" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "nobody" in lines[0] and "check the user, password" in lines[0], r.stderr[-3000:]
    assert "s3cret-pw" not in r.stderr
