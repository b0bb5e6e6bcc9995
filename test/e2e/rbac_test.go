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
	testenv.SkipIfShort(t)
	s := startStack(t, "rbac", 0)
	manager := managerClient(t, s)
	if s.ManagerUser != testenv.ManagerUser {
		t.Fatalf("the stack's manager is %q, want %q", s.ManagerUser, testenv.ManagerUser)
	}

	system := s.Namespace + "-system"
	checkAccess(t, manager, []accessCheck{
		{"create", "", "secrets", s.Namespace, true},
		{"update", "", "secrets", s.Namespace, true}, // challenge shards (ShardWriter)
		{"patch", "apps", "deployments", s.Namespace, true},
		{"patch", "certpilot.dev", "certificates/status", s.Namespace, true},
		{"update", "coordination.k8s.io", "leases", system, true},
		// Not granted: the manager never needs them.
		{"update", "coordination.k8s.io", "leases", s.Namespace, false},
		{"get", "", "configmaps", s.Namespace, false},
		{"create", "apps", "deployments", s.Namespace, false},
		{"deletecollection", "", "secrets", s.Namespace, false},
		{"delete", "certpilot.dev", "issuers", s.Namespace, false},
	})
}

// managerClient returns a client with the stack's manager's kubeconfig, after checking that
// the apiserver takes it for s.ManagerUser.
func managerClient(t *testing.T, s *testenv.Stack) client.Client {
	t.Helper()
	config, err := clientcmd.BuildConfigFromFlags("", s.ManagerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	manager, err := client.New(config, client.Options{Scheme: kube.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	review := &authenticationv1.SelfSubjectReview{}
	if err := manager.Create(context.Background(), review); err != nil {
		t.Fatal(err)
	}
	if got := review.Status.UserInfo.Username; got != s.ManagerUser {
		t.Fatalf("the manager's kubeconfig is user %q, want %q", got, s.ManagerUser)
	}
	return manager
}

// accessCheck is a request the manager may make or not; namespace "" is cluster-wide.
type accessCheck struct {
	verb, group, resource, namespace string
	allowed                          bool
}

// checkAccess asks the apiserver, as the manager (SelfSubjectAccessReview), whether it may
// make each request.
func checkAccess(t *testing.T, manager client.Client, checks []accessCheck) {
	t.Helper()
	for _, check := range checks {
		resource, subresource, _ := strings.Cut(check.resource, "/")
		access := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: check.verb, Group: check.group, Resource: resource, Subresource: subresource, Namespace: check.namespace,
			},
		}}
		if err := manager.Create(context.Background(), access); err != nil {
			t.Fatal(err)
		}
		if access.Status.Allowed != check.allowed {
			where := check.namespace
			if where == "" {
				where = "all namespaces"
			}
			t.Errorf("the manager may %s %s.%s in %s: %t, want %t (%s)", check.verb, check.resource, check.group,
				where, access.Status.Allowed, check.allowed, access.Status.Reason)
		}
	}
}
