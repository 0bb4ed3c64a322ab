#!/usr/bin/env bash
# Start a local single-node OpenSearch (embedded from Maven Central jars) on 127.0.0.1.
#
# Usage: local/opensearch/start.sh [-Ekey=value ...]
#
# Environment:
#   OPENSEARCH_PORT            HTTP port (default 9200)
#   OPENSEARCH_TRANSPORT_PORT  transport port or range (default 9300-9399; first free one is used)
#   OPENSEARCH_HOME_DIR        directory for run state: pid/log files and per-run node homes
#                              (default: local/opensearch/.run)
#   OPENSEARCH_HEAP            JVM heap, used for -Xms and -Xmx (default 512m)
#   OPENSEARCH_JAVA_OPTS       extra JVM options
#   OPENSEARCH_START_TIMEOUT   seconds to wait for the node to answer (default 120)
#
# Extra -Ekey=value arguments are passed to the node as settings, e.g.
#   start.sh -Ethread_pool.write.queue_size=10
#
# Every start uses a fresh, empty node home; stop.sh removes it again.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${OPENSEARCH_PORT:-9200}"
TRANSPORT_PORT="${OPENSEARCH_TRANSPORT_PORT:-9300-9399}"
RUN_DIR="${OPENSEARCH_HOME_DIR:-$SCRIPT_DIR/.run}"
HEAP="${OPENSEARCH_HEAP:-512m}"
START_TIMEOUT="${OPENSEARCH_START_TIMEOUT:-120}"
# shellcheck source=local/opensearch/common.sh
. "$SCRIPT_DIR/common.sh"

URL="http://127.0.0.1:$PORT"

die() { echo "start.sh: $*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    -E?*=*) ;;
    *) die "unexpected argument '$arg' (only -Ekey=value settings are accepted)" ;;
  esac
done

case "$PORT" in ''|*[!0-9]*) die "OPENSEARCH_PORT must be a number, got '$PORT'" ;; esac
command -v java >/dev/null 2>&1 || die "java not found on PATH (Java 17+ required)"
command -v curl >/dev/null 2>&1 || die "curl not found on PATH"


port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
PID_FILE="$RUN_DIR/opensearch-$PORT.pid"
HOME_FILE="$RUN_DIR/opensearch-$PORT.home"
LOG_FILE="$RUN_DIR/opensearch-$PORT.log"

# Already running?
if [ -f "$PID_FILE" ]; then
  old_pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if is_our_process "$old_pid"; then
    echo "OpenSearch is already running (pid $old_pid) at $URL"
    echo "Run $SCRIPT_DIR/stop.sh first for a fresh node."
    exit 0
  fi
  echo "Removing stale pid file $PID_FILE (pid ${old_pid:-?} is not running)"
  if [ -f "$HOME_FILE" ]; then
    old_home="$(cat "$HOME_FILE")"
    case "$old_home" in "$RUN_DIR"/home-*) rm -rf -- "$old_home" ;; esac
    rm -f -- "$HOME_FILE"
  fi
  rm -f -- "$PID_FILE"
fi

if port_in_use "$PORT"; then
  die "port $PORT on 127.0.0.1 is already in use by another process; set OPENSEARCH_PORT to use another port"
fi

# Build only when sources changed since the last successful build.
cd "$SCRIPT_DIR"
STAMP="target/.build-stamp"
if [ ! -d target/classes ] || [ ! -d target/lib ] || [ ! -f "$STAMP" ] \
   || [ -n "$(find pom.xml src -newer "$STAMP" -print -quit)" ]; then
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (needed for the first build)"
  echo "Building local OpenSearch launcher (mvn package)..."
  rm -rf target/lib
  BUILD_LOG="$RUN_DIR/build.log"
  if ! mvn -B -Dstyle.color=never package dependency:copy-dependencies >"$BUILD_LOG" 2>&1; then
    tail -n 40 "$BUILD_LOG" >&2
    die "maven build failed (full log: $BUILD_LOG)"
  fi
  touch "$STAMP"
fi

NODE_HOME="$(mktemp -d "$RUN_DIR/home-$PORT.XXXXXX")"
echo "$NODE_HOME" > "$HOME_FILE"

# shellcheck disable=SC2086  # OPENSEARCH_JAVA_OPTS is intentionally word-split
nohup java -Xms"$HEAP" -Xmx"$HEAP" \
  -Dfile.encoding=UTF-8 \
  -Djava.io.tmpdir="$NODE_HOME" \
  -Dlog4j2.disable.jmx=true \
  ${OPENSEARCH_JAVA_OPTS:-} \
  -cp "$SCRIPT_DIR/target/classes:$SCRIPT_DIR/target/lib/*" \
  "$MAIN_CLASS" "$NODE_HOME" \
  -Ehttp.port="$PORT" -Etransport.port="$TRANSPORT_PORT" "$@" \
  </dev/null >"$LOG_FILE" 2>&1 &
pid=$!
echo "$pid" > "$PID_FILE"
echo "Starting OpenSearch (pid $pid, log $LOG_FILE)..."

fail() {
  echo "start.sh: $*" >&2
  echo "---- last lines of $LOG_FILE ----" >&2
  tail -n 40 "$LOG_FILE" >&2 || true
  kill -KILL "$pid" 2>/dev/null || true
  rm -f -- "$PID_FILE" "$HOME_FILE"
  rm -rf -- "$NODE_HOME"
  exit 1
}

start_ts=$SECONDS
while :; do
  if ! alive "$pid"; then
    fail "OpenSearch process exited during startup"
  fi
  if curl -fsS -m 2 -o /dev/null "$URL/" 2>/dev/null; then
    break
  fi
  if [ $((SECONDS - start_ts)) -ge "$START_TIMEOUT" ]; then
    fail "OpenSearch did not answer on $URL within ${START_TIMEOUT}s"
  fi
  sleep 0.5
done

# The HTTP layer answers slightly before the cluster state is recovered; wait for that
# too so that callers can create indices right away.
curl -fsS -m 35 -o /dev/null "$URL/_cluster/health?wait_for_status=yellow&timeout=30s" \
  || fail "cluster did not reach yellow status"

echo "OpenSearch $(curl -fsS -m 5 "$URL/" | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p') is up after $((SECONDS - start_ts))s: $URL"
