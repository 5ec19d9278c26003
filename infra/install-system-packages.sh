#!/usr/bin/env bash
# The Debian packages the project needs and a fresh machine may lack: PostgreSQL's server binaries, venv support,
# make, and the Prometheus Pushgateway and Prometheus that `make run` and the metrics tests use.
# Installs only what is missing; needs root (or sudo). `make system-packages` and .ci/run run it.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v make >/dev/null || missing+=(make)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
command -v prometheus >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: nothing missing"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "missing ${missing[*]}: run this as root" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update -q
$sudo apt-get install -y -q "${missing[@]}"
