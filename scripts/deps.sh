#!/usr/bin/env bash
# Installs what faultstack's demo, tests and benchmarks need, only when missing.
# Debian packages: the real Linux peers and tools the lab drives (wrk, nc, arping,
# scapy, strongSwan, Chromium included: the tests use each of them for real).
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
chk wrk wrk
chk nc netcat-openbsd
chk arping arping
chk bridge iproute2
# Debian's python3 (not a pyenv one on PATH) with scapy and cryptography: ESP vectors, crafted packets.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import scapy.all, cryptography' >/dev/null 2>&1 || need+=(python3 python3-scapy python3-cryptography)
# strongSwan with userspace ESP (kernel-libipsec): the real IPsec peers.
[ -x /usr/lib/ipsec/charon ] && command -v swanctl >/dev/null 2>&1 && [ -f /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] || need+=(strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins)
# Headless Chromium for the web view's browser tests.
chk chromium chromium
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
