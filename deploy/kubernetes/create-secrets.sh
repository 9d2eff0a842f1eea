#!/bin/sh
# Creates the tracehouse-secrets Secret with fresh random values and prints the two tokens people
# need, once (they are not stored anywhere else). The manifests ship no secret of their own: apply
# them after running this.
#   deploy/kubernetes/create-secrets.sh            # then: kubectl apply -f deploy/kubernetes/
# Values already in the environment are used instead of random ones: CLICKHOUSE_PASSWORD,
# TRACEHOUSE_INGEST_TOKEN, TRACEHOUSE_ADMIN_TOKEN, TRACEHOUSE_SECRET_KEY.
set -eu
NAMESPACE=tracehouse
random() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
CH_PASSWORD="${CLICKHOUSE_PASSWORD:-$(random)}"
INGEST_TOKEN="${TRACEHOUSE_INGEST_TOKEN:-$(random)}"
ADMIN_TOKEN="${TRACEHOUSE_ADMIN_TOKEN:-$(random)}"
SESSION_KEY="${TRACEHOUSE_SECRET_KEY:-$(random)}"
kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$NAMESPACE"
kubectl -n "$NAMESPACE" create secret generic tracehouse-secrets \
  --from-literal=storage-url="clickhouse://tracehouse:${CH_PASSWORD}@clickhouse-tracehouse.tracehouse.svc:9000/tracehouse?cluster=tracehouse" \
  --from-literal=clickhouse-password="${CH_PASSWORD}" \
  --from-literal=ingest-tokens="${INGEST_TOKEN}" \
  --from-literal=api-tokens="admin:admin:${ADMIN_TOKEN}" \
  --from-literal=session-key="${SESSION_KEY}"
echo "tracehouse-secrets created in namespace ${NAMESPACE}. Shown once, keep them safe:"
echo "  ingest token (agents: OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer <token>): ${INGEST_TOKEN}"
echo "  admin API token (sign in to the dashboard with it, or Authorization: Bearer): ${ADMIN_TOKEN}"
