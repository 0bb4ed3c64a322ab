#!/usr/bin/env bash
# Runs the whole suite: lint, then every test, the OpenSearch ones against a real node. Extra
# arguments go to pytest.
#
# With OPENSEARCH_URL already set, the tests use that node and nothing is started. Otherwise a
# fresh single-node OpenSearch is started with local/opensearch/start.sh (built from Maven Central
# jars on first use: Java 17 and Maven needed) on 127.0.0.1:$OPENSEARCH_TEST_PORT (default 9250, so
# a node of your own on 9200 is left alone; a free port is picked when that one is taken), and it
# is always stopped at the end, whatever pytest answered.
#
# Environment:
#   OPENSEARCH_URL         use this node instead of starting one
#   OPENSEARCH_TEST_PORT   HTTP port for the node started here (default 9250)
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/ruff check .

node_port=""
node_run_dir=""

stop_node() {
  local status=$?
  set +e
  if [ -n "$node_port" ]; then
    if OPENSEARCH_PORT="$node_port" OPENSEARCH_HOME_DIR="$node_run_dir" local/opensearch/stop.sh >/dev/null; then
      rm -rf -- "$node_run_dir"
    else
      echo "test.sh: could not stop the OpenSearch node on port $node_port (pid file in $node_run_dir)" >&2
    fi
  elif [ -n "$node_run_dir" ]; then
    rm -rf -- "$node_run_dir"
  fi
  exit "$status"
}
# stop_node exits with the status the script was exiting with (pytest's); INT and TERM exit so
# that the EXIT trap runs.
trap stop_node EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -z "${OPENSEARCH_URL:-}" ]; then
  missing=""
  command -v java >/dev/null 2>&1 || missing="Java 17+ (java)"
  command -v curl >/dev/null 2>&1 || missing="${missing:+$missing, }curl"
  if [ ! -d local/opensearch/target/lib ] && ! command -v mvn >/dev/null 2>&1; then
    missing="${missing:+$missing, }Maven (mvn, for the first build of the node)"
  fi
  if [ -n "$missing" ]; then
    echo "test.sh: the tests need a local OpenSearch node, which needs $missing on PATH." >&2
    echo "test.sh: install it, or point OPENSEARCH_URL at a running node (e.g. OPENSEARCH_URL=http://127.0.0.1:9200 make test)." >&2
    exit 1
  fi
  node_port="${OPENSEARCH_TEST_PORT:-9250}"
  if port_in_use "$node_port"; then
    taken="$node_port"
    node_port="$(free_port)"
    echo "test.sh: port $taken is taken; starting the OpenSearch node on $node_port instead"
  fi
  # A run directory of its own, so a node someone started from this checkout is never reused or stopped.
  node_run_dir="$(mktemp -d "${TMPDIR:-/tmp}/telhawk-test-opensearch.XXXXXX")"
  started=$SECONDS
  if ! OPENSEARCH_PORT="$node_port" OPENSEARCH_HOME_DIR="$node_run_dir" local/opensearch/start.sh; then
    echo "test.sh: the OpenSearch node did not start (see the messages above); the tests were not run." >&2
    exit 1
  fi
  echo "test.sh: OpenSearch node built and started in $((SECONDS - started))s"
  export OPENSEARCH_URL="http://127.0.0.1:$node_port"
fi

# promtool, for the tests of deploy/prometheus/alerts.yml (fetched from Debian's package on first use).
if promtool="$(scripts/promtool.sh)"; then
  export PROMTOOL="$promtool"
else
  echo "test.sh: no promtool could be had; the alert rule tests fail in CI and are skipped elsewhere" >&2
fi

# pytest exits 5 when it collected no tests; that is a failure here, as is any other non-zero code.
.venv/bin/python -m pytest "$@"
