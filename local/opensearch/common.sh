# Shared by start.sh and stop.sh: process checks for the node they manage. Sourced, not run.
# shellcheck shell=bash

MAIN_CLASS="telhawk.opensearch.Launcher"

# True if the process exists and is not a zombie.
alive() {
  local pid="$1" state
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)"
    [ "$state" != "Z" ] || return 1
  fi
  return 0
}

# True if $1 is a live process started by this launcher.
is_our_process() {
  local pid="$1"
  alive "$pid" || return 1
  [ -r "/proc/$pid/cmdline" ] || return 0
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$MAIN_CLASS"
}
