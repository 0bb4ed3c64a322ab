#!/usr/bin/env bash
# Prints the path of a promtool (Prometheus's rule and metrics checker) for the tests of
# deploy/prometheus/alerts.yml, fetching it on first use: Debian's `prometheus` package is
# downloaded (apt-get download, no installation) and only its promtool is kept, under
# build/promtool/. A promtool already on PATH, or in PROMTOOL, is used as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=build/promtool/promtool
if [ -n "${PROMTOOL:-}" ] && [ -x "$PROMTOOL" ]; then echo "$PROMTOOL"; exit 0; fi
if [ -x "$dest" ]; then echo "$PWD/$dest"; exit 0; fi
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi

for tool in apt-get dpkg; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "promtool.sh: no promtool on PATH and no $tool to fetch Debian's; install Prometheus's promtool" >&2
    exit 1
  fi
done
work="$(mktemp -d "${TMPDIR:-/tmp}/telhawk-promtool.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT
# A machine whose package lists were never read needs `apt-get update` first (root only).
if ! (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1); then
  apt-get update -qq >/dev/null
  (cd "$work" && apt-get download -qq prometheus >/dev/null)
fi
dpkg -x "$work"/prometheus_*.deb "$work/root"
mkdir -p "$(dirname "$dest")"
cp "$work/root/usr/bin/promtool" "$dest.tmp"
mv "$dest.tmp" "$dest"
"$PWD/$dest" --version >&2
echo "$PWD/$dest"
