// Package testenv starts the real parts certpilot's tests run on: a kube-apiserver and etcd
// (envtest) with certpilot's CRDs, and Let's Encrypt's test CA Pebble with its challenge test
// server. The binaries are built from pinned module versions by hack/build-test-binaries.sh
// (`make test-binaries`) into the repository's ignored bin/ directory. Every process listens on
// 127.0.0.1 on a port chosen at run time and is stopped when the test (or package) ends.
//
// One file per part: kube.go, audit.go, cache.go and rbac.go (the apiserver, its audit log, a
// manager-like cached client, the install's RBAC); pebble.go, pebble_config.go,
// pebble_management.go and pebbleguard.go (Pebble, its files, what a test asks it, the guard
// against its deadlock under load); bind.go (BIND 9); stack.go, chart.go and manifests.go (the
// built manager and edge on all of these, and the Helm chart and manifests they install);
// gatewayapi.go (the Gateway API CRDs); paths.go and testing.go (where the binaries are, shared
// test helpers); process.go (running and stopping processes).
//
// Tests that need these parts skip under `go test -short`; without -short a missing binary fails
// the test with the command that builds it.
package testenv
