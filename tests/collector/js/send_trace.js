// One trace across three services, each with its own OpenTelemetry JS TracerProvider and OTLP/gRPC
// exporter (gzip, a token in the metadata), as three Node services would send it.
//   node send_trace.js <host:port> <token>
// Prints {"traceId": ..., "spans": {"<service> <name>": {"spanId", "parentSpanId"}}} and exits 0
// only when every export succeeded.
'use strict';

const grpc = require('@grpc/grpc-js');
const { trace, context, SpanKind, SpanStatusCode } = require('@opentelemetry/api');
const { TracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');
const { resourceFromAttributes } = require('@opentelemetry/resources');

const [target, token] = process.argv.slice(2);
const failures = [];

function service(name) {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  const exporter = new OTLPTraceExporter({ url: `http://${target}`, metadata, compression: 'gzip' });
  const wrapped = {
    export(spans, done) {
      exporter.export(spans, (result) => {
        if (result.code !== 0) failures.push(`${name}: ${result.error}`);
        done(result);
      });
    },
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush(),
  };
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': name, 'telemetry.sdk.language': 'nodejs' }),
    spanProcessors: [new SimpleSpanProcessor({ exporter: wrapped })],
  });
  return { provider, tracer: provider.getTracer(`${name}.http`, '1.0.0') };
}

async function main() {
  const front = service('js-frontend');
  const cart = service('js-cart');
  const pay = service('js-payments');
  const seen = {};
  const note = (svc, span) => {
    const c = span.spanContext();
    seen[`${svc} ${span.name}`] = { spanId: c.spanId, parentSpanId: span.parentSpanContext?.spanId || '' };
  };

  const root = front.tracer.startSpan('GET /checkout', { kind: SpanKind.SERVER, attributes: { 'http.route': '/checkout' } });
  const rootCtx = trace.setSpan(context.active(), root);
  const callCart = front.tracer.startSpan('GET /cart', { kind: SpanKind.CLIENT, attributes: { 'peer.service': 'js-cart' } }, rootCtx);
  // the next service continues from the caller's span context, as W3C traceparent carries it
  const cartServer = cart.tracer.startSpan('GET /cart', { kind: SpanKind.SERVER }, trace.setSpan(context.active(), callCart));
  const callPay = cart.tracer.startSpan('POST /pay', { kind: SpanKind.CLIENT, attributes: { 'peer.service': 'js-payments' } },
    trace.setSpan(context.active(), cartServer));
  const payServer = pay.tracer.startSpan('POST /pay', { kind: SpanKind.SERVER }, trace.setSpan(context.active(), callPay));
  payServer.addEvent('card declined', { code: 51 });
  payServer.setStatus({ code: SpanStatusCode.ERROR, message: 'declined' });
  for (const [svc, span] of [['js-payments', payServer], ['js-cart', callPay], ['js-cart', cartServer],
    ['js-frontend', callCart], ['js-frontend', root]]) {
    span.end();
    note(svc, span);
  }
  for (const s of [front, cart, pay]) await s.provider.shutdown();
  process.stdout.write(JSON.stringify({ traceId: root.spanContext().traceId, spans: seen, failures }) + '\n');
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(2); });
