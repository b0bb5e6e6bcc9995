package controllers

import (
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// noReads is an APIReader that fails the test when read: a kind turned off is never read (the
// manager may have no RBAC for it).
type noReads struct{ t *testing.T }

func (r noReads) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	r.t.Errorf("read %T %s", obj, key)
	return nil
}

func (r noReads) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	r.t.Errorf("listed %T", list)
	return nil
}

// TestInjectionKindTurnedOff: an entry for a kind --inject-kinds leaves out fails without a read
// and stays recorded; a recorded workload of that kind no longer listed is forgotten, so that
// it never holds the Certificate's deletion.
func TestInjectionKindTurnedOff(t *testing.T) {
	r := &InjectionReconciler{APIReader: noReads{t}, Kinds: []string{certpilotv1alpha1.InjectKindDeployment}}
	statefulSet := certpilotv1alpha1.InjectedWorkload{Kind: certpilotv1alpha1.InjectKindStatefulSet, Name: "db"}
	cert := &certpilotv1alpha1.Certificate{}
	cert.Namespace, cert.Name = "team-a", "db"
	cert.Status.Injected = []certpilotv1alpha1.InjectedWorkload{statefulSet}

	listed := r.planWorkload(context.Background(), cert, injectSource{serial: "01"}, injectTarget{
		workload: statefulSet, entries: []certpilotv1alpha1.InjectTarget{{Kind: statefulSet.Kind, Name: statefulSet.Name}},
	})
	if listed.write || !listed.result.keep || len(listed.result.problems) != 1 ||
		listed.result.problems[0].reason != reasonInjectFailed || !strings.Contains(listed.result.problems[0].message, "--inject-kinds") {
		t.Errorf("listed entry of a kind turned off: write %v, result %+v", listed.write, listed.result)
	}
	gone := r.planWorkload(context.Background(), cert, injectSource{serial: "01"}, injectTarget{workload: statefulSet})
	if gone.write || gone.result.keep || len(gone.result.problems) != 1 {
		t.Errorf("recorded workload of a kind turned off, no longer listed: write %v, result %+v", gone.write, gone.result)
	}
	if !r.kindEnabled(certpilotv1alpha1.InjectKindDeployment) || r.kindEnabled(certpilotv1alpha1.InjectKindDaemonSet) ||
		!(&InjectionReconciler{}).kindEnabled(certpilotv1alpha1.InjectKindDaemonSet) {
		t.Error("kindEnabled: Deployment on, DaemonSet off; nil Kinds: all on")
	}
}
