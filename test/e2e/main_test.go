// Package e2e runs certpilot end to end as users run it: the built manager and edge binaries
// against a real kube-apiserver and etcd, with Let's Encrypt's test CA Pebble validating
// challenges through the edge.
package e2e

import (
	"os"
	"testing"

	"github.com/certpilot/certpilot/internal/testenv"
)

var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }
