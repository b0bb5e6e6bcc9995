package metricsauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certpilot/certpilot/internal/testenv"
)

var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }

// TestGuardAgainstTheAPIServer: ServiceAccount tokens made by the apiserver's TokenRequest API
// for different audiences, reviewed by the real apiserver. The default guard accepts a token
// for the apiserver's own audiences and refuses one projected for another audience; a guard
// with audiences accepts only tokens for them.
func TestGuardAgainstTheAPIServer(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	clientset, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	namespace := testenv.Namespace(t, "metricsauth")
	if _, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	account, err := clientset.CoreV1().ServiceAccounts(namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "prometheus"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount may get /metrics: an authenticated token is then a 200, not a 403.
	reader := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{GenerateName: "metrics-reader-"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	if reader, err = clientset.RbacV1().ClusterRoles().Create(ctx, reader, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{GenerateName: "metrics-reader-"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: account.Name}}}
	if binding, err = clientset.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = clientset.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
		_ = clientset.RbacV1().ClusterRoles().Delete(context.Background(), reader.Name, metav1.DeleteOptions{})
	})
	token := func(audiences ...string) string {
		t.Helper()
		request, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, account.Name,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return request.Status.Token
	}
	apiserverToken, otherToken, metricsToken := token(), token("vault"), token("certpilot-metrics")

	for _, c := range []struct {
		name      string
		audiences []string
		want      map[string]int
	}{
		{"default audiences", nil, map[string]int{
			"apiserver": http.StatusOK, "vault": http.StatusUnauthorized, "certpilot-metrics": http.StatusUnauthorized}},
		{"certpilot-metrics", []string{"certpilot-metrics"}, map[string]int{
			"apiserver": http.StatusUnauthorized, "vault": http.StatusUnauthorized, "certpilot-metrics": http.StatusOK}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newGuard(clientset.AuthenticationV1().TokenReviews(), clientset.AuthorizationV1().SubjectAccessReviews(),
				Options{Audiences: c.audiences})
			for name, token := range map[string]string{"apiserver": apiserverToken, "vault": otherToken, "certpilot-metrics": metricsToken} {
				request := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				request.Header.Set("Authorization", "Bearer "+token)
				if got, message := g.check(request); got != c.want[name] {
					t.Errorf("token for audience %s: %d (%s), want %d", name, got, message, c.want[name])
				}
			}
		})
	}
}
