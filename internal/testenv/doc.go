// Package testenv starts the real parts certpilot's tests run on: a kube-apiserver and etcd
// (envtest) with certpilot's CRDs, and Let's Encrypt's test CA Pebble with its challenge test
// server. The binaries are built from pinned module versions by hack/build-test-binaries.sh
// (`make test-binaries`) into the repository's ignored bin/ directory. Every process listens on
// 127.0.0.1 on a port chosen at run time and is stopped when the test (or package) ends.
//
// Tests that need these parts skip under `go test -short`; without -short a missing binary fails
// the test with the command that builds it.
package testenv
