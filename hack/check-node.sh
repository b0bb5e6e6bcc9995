#!/usr/bin/env bash
# Checks that this machine can run the single-node cluster of test/cluster (and make cluster-up):
# root, cgroups, a network bridge and iptables. `make test` runs it after installing the test
# dependencies and before building anything; when the machine cannot, it stops there with one
# line saying why and what to do.
# internal/testcluster.CannotRun makes the same checks for `go test` alone.
set -uo pipefail
fail() { echo "make test: this machine cannot run containers: $1; run make test as root on a VM or a privileged container (or go test -short ./... for the tests that need no real parts)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "the single-node cluster tests (test/cluster) need root"
[ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || fail "no cgroup hierarchy is mounted at /sys/fs/cgroup"
ip link add certpilot-probe type bridge 2>/dev/null || fail "a network bridge cannot be created (no network administration here)"
ip link del certpilot-probe
iptables -w -n -L FORWARD >/dev/null 2>&1 || fail "iptables does not work here"
exit 0
