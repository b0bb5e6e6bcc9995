// Package sim runs certpilot's certificate reconciler through simulated years: the real
// reconciler against a real apiserver and etcd (envtest), with an injected clock that is also the
// clock of an in-process ACME CA (internal/acme/acmetest). See TestRenewalSimulator.
package sim

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/certpilot/certpilot/internal/testenv"
)

// kube is the package's apiserver and etcd (nil under -short).
var kube *testenv.Kube

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	os.Exit(testenv.RunWithKube(m, &kube))
}
