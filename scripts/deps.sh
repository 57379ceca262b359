#!/usr/bin/env bash
# Installs what faultstack's demo, tests and benchmarks need, only when missing.
# Debian packages: the real Linux peers and tools the lab drives.
set -euo pipefail
need=()
chk() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
chk ip iproute2
chk ping iputils-ping
chk iperf3 iperf3
chk tshark tshark
chk tcpdump tcpdump
chk nft nftables
chk openssl openssl
chk curl curl
chk tc iproute2
chk hping3 hping3
chk ab apache2-utils
chk python3 python3
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing ${need[*]}; run as root (or install them) first" >&2; exit 1
  fi
  echo "deps: installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "deps: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
