#!/bin/sh
# Creates the tracehouse-secrets Secret with fresh random values and prints the two tokens people
# need, once (they are not stored anywhere else). The manifests ship no secret of their own: apply
# them after running this.
#   deploy/kubernetes/create-secrets.sh            # then: kubectl apply -f deploy/kubernetes/
# Values already in the environment are used instead of random ones: CLICKHOUSE_PASSWORD,
# TRACEHOUSE_INGEST_TOKEN, TRACEHOUSE_ADMIN_TOKEN, TRACEHOUSE_SECRET_KEY.
# No value is ever an argument of a command (arguments are visible to every user of the machine in
# `ps`): each is written by the shell's printf builtin, without a trailing newline, to a file only
# this user can read, in a directory removed on exit, and kubectl reads them from there.
set -eu
NAMESPACE=tracehouse
umask 077
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
trap 'exit 1' HUP INT TERM
random() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
put() { printf '%s' "$2" >"$DIR/$1"; }
CH_PASSWORD="${CLICKHOUSE_PASSWORD:-$(random)}"
INGEST_TOKEN="${TRACEHOUSE_INGEST_TOKEN:-$(random)}"
ADMIN_TOKEN="${TRACEHOUSE_ADMIN_TOKEN:-$(random)}"
SESSION_KEY="${TRACEHOUSE_SECRET_KEY:-$(random)}"
# percent-encoded for the URL's user info ('/', '?', '#', '@', ':' or '%' would break it); given to Python in
# its environment, not its arguments
CH_PASSWORD_IN_URL=$(VALUE="$CH_PASSWORD" python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["VALUE"], safe=""))')
put storage-url "clickhouse://tracehouse:${CH_PASSWORD_IN_URL}@clickhouse-tracehouse.tracehouse.svc:9000/tracehouse?cluster=tracehouse"
put clickhouse-password "${CH_PASSWORD}"
put ingest-tokens "${INGEST_TOKEN}"
put api-tokens "admin:admin:${ADMIN_TOKEN}"
put session-key "${SESSION_KEY}"
kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$NAMESPACE"
kubectl -n "$NAMESPACE" create secret generic tracehouse-secrets --from-file="$DIR"
echo "tracehouse-secrets created in namespace ${NAMESPACE}. Shown once, keep them safe:"
printf '%s\n' "  ingest token (agents: OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer <token>): ${INGEST_TOKEN}"
printf '%s\n' "  admin API token (sign in to the dashboard with it, or Authorization: Bearer): ${ADMIN_TOKEN}"
