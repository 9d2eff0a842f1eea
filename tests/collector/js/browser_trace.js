// A page's trace sent by the OpenTelemetry JS OTLP/HTTP exporter's browser build (JSON over fetch,
// as a web app's tracing sends it), bundled by esbuild for the browser (tests/collector/test_js_browser.py).
// The page calls window.sendTrace(url, token) and gets {traceId, spans, results}.
import { trace, context, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { TracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';

window.sendTrace = async (url, token) => {
  const results = [];
  const exporter = new OTLPTraceExporter({ url, headers: { Authorization: `Bearer ${token}` } });
  const recording = {
    export(spans, done) {
      exporter.export(spans, (r) => { results.push(r.code === 0 ? 'ok' : String(r.error)); done(r); });
    },
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush(),
  };
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'web-shop', 'telemetry.sdk.language': 'webjs' }),
    spanProcessors: [new SimpleSpanProcessor({ exporter: recording })],
  });
  const tracer = provider.getTracer('web-shop.ui', '2.0.0');
  const root = tracer.startSpan('click checkout', {
    kind: SpanKind.INTERNAL,
    attributes: {
      'ui.element': 'button#checkout', 'cart.items': 3, 'cart.total': 19.5, 'user.returning': true,
      'cart.skus': ['a-1', 'b-2'], 'note': 'naïve <b>ü</b> \u2028',
    },
  });
  const child = tracer.startSpan('POST /api/checkout', { kind: SpanKind.CLIENT, attributes: { 'http.request.method': 'POST' } },
    trace.setSpan(context.active(), root));
  child.addEvent('retry', { attempt: 2 });
  child.setStatus({ code: SpanStatusCode.ERROR, message: 'payment declined' });
  child.end();
  root.end();
  const errors = [];
  // the SDK rejects a flush whose exports failed (with the list of errors): noted, not thrown
  await provider.forceFlush().catch((e) => errors.push(String(e)));
  await provider.shutdown().catch((e) => errors.push(String(e)));
  const ids = (s) => ({ spanId: s.spanContext().spanId, parentSpanId: s.parentSpanContext?.spanId || '' });
  return { traceId: root.spanContext().traceId, spans: { root: ids(root), child: ids(child) }, results, errors };
};
