#!/usr/bin/env bash
# Start a private ClickHouse server (Debian's clickhouse-server) on free loopback ports,
# with its own config and data under DIR. Prints "PID URL" on success.
#   usage: start_clickhouse.sh DIR
set -euo pipefail
dir=${1:?usage: start_clickhouse.sh DIR}
mkdir -p "$dir"/{data,tmp,user_files,format_schemas}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
tcp=$(free_port); http=$(free_port)
cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/server.err.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$tcp</tcp_port>
  <http_port>$http</http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <timezone>UTC</timezone>
</yandex>
XML
# tracehouse_rules: the read-only user SQL alert rules run as (README "SQL rules on a ClickHouse
# server"), confined to the database th_rules that tests/alerts/test_rule_user.py uses.
cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default>
    <tracehouse_rules><readonly>1</readonly><max_execution_time>10</max_execution_time><max_memory_usage>1000000000</max_memory_usage><max_rows_to_read>300000000</max_rows_to_read><max_bytes_to_read>40000000000</max_bytes_to_read><max_result_rows>10000</max_result_rows><max_threads>1</max_threads></tracehouse_rules></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
    <tracehouse_rules><password>rules-secret</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>tracehouse_rules</profile><quota>default</quota><allow_databases><database>th_rules</database></allow_databases></tracehouse_rules></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
clickhouse-server --config-file="$dir/config.xml" > "$dir/stdout.log" 2>&1 &
pid=$!
echo "$pid" > "$dir/pid"
for _ in $(seq 1 120); do
  if clickhouse-client --host 127.0.0.1 --port "$tcp" --query "SELECT 1" >/dev/null 2>&1; then
    echo "$pid clickhouse://default:@127.0.0.1:$tcp/default"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "clickhouse-server exited; see $dir" >&2; cat "$dir"/*.log >&2 || true; exit 1; fi
  sleep 0.5
done
echo "clickhouse-server did not answer within 60 s" >&2
kill "$pid" || true
exit 1
