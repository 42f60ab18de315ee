#!/usr/bin/env bash
# Make sure HAProxy is installed (Debian's `haproxy` package). bench/scaleout.py and
# bench/webhook_throughput.py put it in front of the app instances, and the scale-out smoke test
# runs through it; they fail loudly (never skip) when it is missing and cannot be installed.
# Idempotent: does nothing when haproxy is already on PATH. Starts no service: the benchmark
# runs its own haproxy in the foreground with a generated configuration.
set -euo pipefail
if command -v haproxy >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "haproxy is not installed and apt-get is unavailable; install HAProxy and put it on PATH" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing Debian's haproxy (load balancer for the scale-out benchmark)"
# Another apt run may hold the lock for a while; wait for it rather than failing.
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends haproxy >/dev/null
# The package enables a system service on a default configuration; the benchmark needs none.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
  $sudo systemctl stop haproxy || true
fi
command -v haproxy >/dev/null 2>&1 || { echo "haproxy did not install" >&2; exit 1; }
