#!/bin/sh
# Container entrypoint: make sure the data volume is usable, then run the command.
# Opening the database here applies migrations and marks runs that a previous
# container left 'running' (killed mid-run) as 'interrupted', before anything else.
set -eu
: "${DB_PATH:=/home/pipeops/app/data/loadtest.db}"
export DB_PATH
data_dir=$(dirname "$DB_PATH")
mkdir -p "$data_dir" 2>/dev/null || true
if [ ! -d "$data_dir" ] || [ ! -w "$data_dir" ]; then
  echo "loadtester: data directory $data_dir is not writable by uid $(id -u); mount the volume writable for UID 1000" >&2
  exit 1
fi
loadtester db migrate >/dev/null
exec "$@"
