#!/usr/bin/env bash
# Installs the system packages multi-bridge's demo and tests need on a fresh
# Debian/Ubuntu machine, only when a command is missing, so repeated runs are
# quiet and offline-safe. Usage: hack/install-deps.sh [e2e]
set -euo pipefail

declare -A pkg_for=(
  [ip]=iproute2
  [nft]=nftables
  [iptables]=iptables
  [ping]=iputils-ping
  [sysctl]=procps
  [tcpdump]=tcpdump
)
if [[ "${1:-}" == "e2e" ]]; then
  pkg_for[etcd]=etcd-server
  pkg_for[openssl]=openssl
  pkg_for[curl]=curl
fi

missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
(( ${#missing[@]} == 0 )) && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "missing packages: ${missing[*]}; run as root (sudo make ...) to install them" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing packages: ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
