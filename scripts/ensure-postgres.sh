#!/usr/bin/env bash
# Start the machine's PostgreSQL cluster when it is not answering. The suite's PostgreSQL
# tests need it; they fail loudly (never skip) when it cannot be reached.
set -euo pipefail
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  echo "PostgreSQL is not answering on $host:$port; starting the local cluster"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do
    pg_isready -q -h "$host" -p "$port" && exit 0
    sleep 1
  done
fi
echo "PostgreSQL is not reachable on $host:$port (set TEST_POSTGRES_URL to point the suite elsewhere)" >&2
exit 1
