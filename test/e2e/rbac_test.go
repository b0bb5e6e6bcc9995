package e2e

import (
	"context"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certpilot/certpilot/internal/testenv"
)

// TestManagerHasOnlyItsRole checks what every end-to-end test relies on to test the install's
// RBAC: the stack's manager talks to the apiserver as the ServiceAccount config/rbac binds its
// roles to, and is allowed what those roles grant and nothing else.
func TestManagerHasOnlyItsRole(t *testing.T) {
	s := startStack(t, "rbac", 0)
	ctx := context.Background()
	config, err := clientcmd.BuildConfigFromFlags("", s.ManagerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	manager, err := client.New(config, client.Options{Scheme: kube.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	review := &authenticationv1.SelfSubjectReview{}
	if err := manager.Create(ctx, review); err != nil {
		t.Fatal(err)
	}
	if got := review.Status.UserInfo.Username; got != testenv.ManagerUser {
		t.Fatalf("the manager's kubeconfig is user %q, want %q", got, testenv.ManagerUser)
	}

	system := s.Namespace + "-system"
	for _, check := range []struct {
		verb, group, resource, namespace string
		allowed                          bool
	}{
		{"create", "", "secrets", s.Namespace, true},
		{"patch", "apps", "deployments", s.Namespace, true},
		{"patch", "certpilot.dev", "certificates/status", s.Namespace, true},
		{"update", "coordination.k8s.io", "leases", system, true},
		// Not granted: the manager never needs them.
		{"update", "coordination.k8s.io", "leases", s.Namespace, false},
		{"get", "", "configmaps", s.Namespace, false},
		{"create", "apps", "deployments", s.Namespace, false},
		{"update", "", "secrets", s.Namespace, false},
		{"delete", "certpilot.dev", "issuers", s.Namespace, false},
	} {
		resource, subresource, _ := strings.Cut(check.resource, "/")
		access := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: check.verb, Group: check.group, Resource: resource, Subresource: subresource, Namespace: check.namespace,
			},
		}}
		if err := manager.Create(ctx, access); err != nil {
			t.Fatal(err)
		}
		if access.Status.Allowed != check.allowed {
			t.Errorf("the manager may %s %s.%s in %s: %t, want %t (%s)", check.verb, check.resource, check.group,
				check.namespace, access.Status.Allowed, check.allowed, access.Status.Reason)
		}
	}
}
