import gc
import logging

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tracehouse.agent import cli, instrument, metrics_host, metrics_process


class FakeEntryPoint:
    def __init__(self, name, factory):
        self.name, self._factory, self.dist = name, factory, None

    def load(self):
        return self._factory


def test_one_broken_instrumentor_does_not_stop_the_rest(caplog):
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

    calls = []

    class Good(BaseInstrumentor):
        def instrumentation_dependencies(self):
            return ()

        def _instrument(self, **kw):
            calls.append(kw.get("tracer_provider"))

        def _uninstrument(self, **kw):
            calls.append("un")

    def broken():
        raise ImportError("libfoo.so: cannot open shared object file")

    eps = [FakeEntryPoint("broken", broken), FakeEntryPoint("good", Good), FakeEntryPoint("fastapi", Good)]
    with caplog.at_level(logging.WARNING, "tracehouse.agent"):
        report = instrument.load_all(tracer_provider="tp", entry_points=eps, disabled=frozenset({"uvicorn"}))
    try:
        assert "good" in report.loaded and "broken" in report.failed
        # the lean one replaces the stock one (loaded when Starlette is imported, at once if it is already)
        assert "tracehouse.starlette" in report.loaded + report.pending and "fastapi" in report.skipped
        assert calls == ["tp"] and "broken" in caplog.text
    finally:
        instrument.unload(report)
    assert calls[-1] == "un"


def collect(register):
    reader = InMemoryMetricReader()
    register(MeterProvider(metric_readers=[reader]).get_meter("t"))
    data = reader.get_metrics_data()
    return {m.name: m.data.data_points for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def test_process_and_runtime_metrics_including_gc_pause():
    timer = metrics_process.GcTimer().install()
    try:
        gc.collect()
        pts = collect(lambda m: metrics_process.register(m, timer))
    finally:
        timer.uninstall()
    assert {p.attributes["cpu.mode"] for p in pts["process.cpu.time"]} == {"user", "system"}
    assert pts["process.memory.usage"][0].value > 10_000_000
    assert pts["process.thread.count"][0].value >= 1
    assert pts["process.unix.file_descriptor.count"][0].value >= 3
    gen2 = [p for p in pts["cpython.gc.collections"] if p.attributes["cpython.gc.generation"] == 2]
    assert gen2[0].value >= 1
    pause2 = [p for p in pts["tracehouse.cpython.gc.pause.time"] if p.attributes["cpython.gc.generation"] == 2]
    assert pause2[0].value > 0


def test_host_metrics():
    pts = collect(metrics_host.register)
    assert 0 <= pts["system.cpu.utilization"][0].value <= 1
    states = {p.attributes["system.memory.state"]: p.value for p in pts["system.memory.usage"]}
    assert states["used"] > 0 and states["free"] > 0
    assert {p.attributes["network.io.direction"] for p in pts["system.network.io"]} == {"receive", "transmit"}


def test_asyncio_loop_lag_is_measured():
    import asyncio
    import time

    lag = metrics_process.LoopLag()
    lag.interval = 0.05

    async def main():
        lag.ensure(asyncio.get_running_loop())
        time.sleep(0.2)  # block the loop
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert lag.lag is not None and lag.lag >= 0.1


def test_cli_environment():
    args = cli._parser().parse_args(["run", "--service", "api", "--endpoint", "http://c:4318", "--",
                                     "python", "app.py"])
    env = cli.build_env(args, {"PYTHONPATH": "/src", "PATH": "/bin"})
    assert env["PYTHONPATH"].split(":") == [cli.BOOTSTRAP, "/src"]
    assert env["OTEL_SERVICE_NAME"] == "api" and env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://c:4318"
    assert args.command[-2:] == ["python", "app.py"]
    assert cli.main(["run"]) == 2
