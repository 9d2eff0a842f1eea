"""A Django project under `tracehouse-agent run`, served three ways: gunicorn (WSGI), uvicorn (ASGI)
and Django's own runserver, exporting to a real local receiver.

Each request is one SERVER span named by its URL pattern; a view's exception, which Django turns
into a 500 page itself, is on the span; a client call made in the view is its child."""

import os
import subprocess
import sys
import textwrap

import pytest

from testkit.servers import free_port, wait_port
from tests.agent.otlp_sink import attrs
from tests.agent.test_end_to_end import get, stop

BIN = os.path.dirname(sys.executable)

SETTINGS = '''
SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
LOGGING_CONFIG = None
'''

URLS = '''
import requests
from django.http import JsonResponse
from django.urls import path


def item(request, item_id):
    if item_id == 500:
        raise ValueError("no item 500")
    return JsonResponse({"id": item_id})


def call(request):
    return JsonResponse({"status": requests.get(request.GET["url"], timeout=5).status_code})


urlpatterns = [path("items/<int:item_id>", item), path("call", call)]
'''

ENTRY = '''
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
from django.core.{kind} import get_{kind}_application
application = get_{kind}_application()
'''


def project(tmp_path):
    pkg = tmp_path / "shop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "settings.py").write_text(SETTINGS)
    (pkg / "urls.py").write_text(URLS)
    for kind in ("wsgi", "asgi"):
        (pkg / f"{kind}.py").write_text(textwrap.dedent(ENTRY.format(kind=kind)))
    (tmp_path / "manage.py").write_text(textwrap.dedent('''
        import os, sys
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
        from django.core.management import execute_from_command_line
        execute_from_command_line(sys.argv)
    '''))


SERVERS = {
    "gunicorn": lambda port: [f"{BIN}/gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "shop.wsgi:application"],
    "uvicorn": lambda port: [f"{BIN}/uvicorn", "shop.asgi:application", "--port", str(port), "--no-access-log"],
    "runserver": lambda port: [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
}


def routes_measured(sink) -> set:
    return {attrs(p.attributes).get("http.route") for _, m in sink.metrics()
            if m.name == "http.server.request.duration" for p in m.histogram.data_points}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_django_requests_are_traced_by_route_with_their_errors(tmp_path, sink, server):
    project(tmp_path)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OTEL_BSP_SCHEDULE_DELAY="200",
               TRACEHOUSE_METRICS_INTERVAL="0.5")
    proc = subprocess.Popen([f"{BIN}/tracehouse-agent", "run", "--service", "djshop", "--endpoint", sink.url, "--",
                             *SERVERS[server](port)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_port(port, 30), proc.stdout.read1().decode() if proc.poll() is not None else "no port"
        assert get(port, "/items/7")[0] == 200
        assert get(port, "/items/500")[0] == 500
        assert get(port, f"/call?url={sink.url}/health")[0] == 200
        spans = sink.wait(lambda s: [x for _, x in s.spans()] if sum(x.kind == 2 for _, x in s.spans()) >= 3
                          and any(x.kind == 3 for _, x in s.spans()) else None)
        assert sink.wait(lambda s: routes_measured(s) >= {"/items/<int:item_id>", "/call"}), routes_measured(sink)
    finally:
        stop(proc)
    server_spans = {s.name: s for s in spans if s.kind == 2}
    assert set(server_spans) == {"GET /items/<int:item_id>", "GET /call"}, [s.name for s in spans]
    ok, failed = [s for s in spans if s.kind == 2 and s.name == "GET /items/<int:item_id>"]
    if attrs(ok.attributes)["http.response.status_code"] == 500:
        ok, failed = failed, ok
    assert attrs(ok.attributes)["http.route"] == "/items/<int:item_id>" and ok.status.code == 0
    a = attrs(failed.attributes)
    assert a["http.response.status_code"] == 500 and a["error.type"] == "ValueError"
    assert failed.status.code == 2 and "no item 500" in failed.status.message
    event = next(e for e in failed.events if e.name == "exception")
    assert attrs(event.attributes)["exception.type"] == "ValueError"
    client = next(s for s in spans if s.kind == 3)
    call = server_spans["GET /call"]
    assert client.trace_id == call.trace_id and client.parent_span_id == call.span_id
