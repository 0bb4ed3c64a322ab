#!/usr/bin/env bash
# Stop the local OpenSearch started by start.sh (same OPENSEARCH_PORT / OPENSEARCH_HOME_DIR).
# Safe to run when nothing is running.
#
# Environment:
#   OPENSEARCH_PORT       HTTP port the node was started with (default 9200)
#   OPENSEARCH_HOME_DIR   run-state directory used by start.sh (default: local/opensearch/.run)
#   OPENSEARCH_KEEP_HOME  set to 1 to keep the node's data directory after stopping
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${OPENSEARCH_PORT:-9200}"
RUN_DIR="${OPENSEARCH_HOME_DIR:-$SCRIPT_DIR/.run}"
# shellcheck source=local/opensearch/common.sh
. "$SCRIPT_DIR/common.sh"
STOP_TIMEOUT=20

if [ ! -d "$RUN_DIR" ]; then
  echo "OpenSearch is not running (no $RUN_DIR)"
  exit 0
fi
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
PID_FILE="$RUN_DIR/opensearch-$PORT.pid"
HOME_FILE="$RUN_DIR/opensearch-$PORT.home"


remove_home() {
  if [ -f "$HOME_FILE" ]; then
    local home
    home="$(cat "$HOME_FILE")"
    if [ "${OPENSEARCH_KEEP_HOME:-0}" != "1" ]; then
      case "$home" in "$RUN_DIR"/home-*) rm -rf -- "$home" ;; esac
    else
      echo "Keeping node home $home"
    fi
    rm -f -- "$HOME_FILE"
  fi
}

if [ ! -f "$PID_FILE" ]; then
  echo "OpenSearch is not running on port $PORT (no pid file)"
  remove_home
  exit 0
fi

pid="$(cat "$PID_FILE" 2>/dev/null || true)"
if ! is_our_process "$pid"; then
  echo "OpenSearch is not running (stale pid file, pid ${pid:-?})"
  rm -f -- "$PID_FILE"
  remove_home
  exit 0
fi

echo "Stopping OpenSearch (pid $pid)..."
kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + STOP_TIMEOUT))
while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
  sleep 0.2
done
if alive "$pid"; then
  echo "OpenSearch did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
fi

rm -f -- "$PID_FILE"
remove_home
echo "OpenSearch stopped"
