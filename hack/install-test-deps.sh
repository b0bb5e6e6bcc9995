#!/usr/bin/env bash
# Installs the system packages the tests run on, from Debian's packages, when they are missing:
#   bind9, bind9-dnsutils  a real BIND 9 (named) for the RFC 2136 dns-01 tests
#   openssl                an independent TLS client that checks the edge's tls-alpn-01 answers
#   containerd, runc, containernetworking-plugins, iptables, conntrack
#                          the container runtime, pod network and service rules of the single-node
#                          cluster (test/cluster, make cluster-up; docs/cluster.md)
# As root it runs apt-get itself, otherwise through `sudo -n` when that works. When neither
# works it fails before any test runs, with one line giving the exact command to run.
# `make test`, `make test-e2e` and `make bench` call it; .ci/run calls those targets, so CI
# installs nothing a newcomer's `make test` does not.
set -euo pipefail

log() { printf '[install-test-deps] %s\n' "$*" >&2; }

have_named() { command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ]; }
have_openssl() { command -v openssl >/dev/null 2>&1; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

missing=()
have_named || missing+=(bind9 bind9-dnsutils)
have_openssl || missing+=(openssl)
have containerd && have ctr || missing+=(containerd)
have runc || missing+=(runc)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
have iptables || missing+=(iptables)
have conntrack || missing+=(conntrack)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

command="apt-get update && apt-get install -y ${missing[*]}"
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "missing ${missing[*]}: run 'sudo sh -c \"${command}\"' (as root: '${command}'), then run make again" >&2
  exit 1
fi
log "installing ${missing[*]} from Debian's packages"
started=$(date +%s)
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
have_named || { echo "bind9 was installed but named is not on PATH or at /usr/sbin/named" >&2; exit 1; }
log "installed in $(( $(date +%s) - started ))s"
