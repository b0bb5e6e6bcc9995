package reliability

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/certpilot/certpilot/internal/testenv"
)

// TestMetricsSecure: with --metrics-secure (the chart's default) the manager serves /metrics
// over HTTPS only to a client whose bearer token the apiserver authenticates and who may get
// /metrics: no token is 401, a ServiceAccount without the permission 403, one bound to the
// chart's metrics-reader rule gets the metrics.
func TestMetricsSecure(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startHostileStack(t, "metrics-secure", testenv.PebbleOptions{}, "--metrics-secure")

	reader := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: s.Namespace + "-metrics-reader"},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: s.Namespace + "-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: s.Namespace, Name: "prometheus"}},
	}
	if err := kube.Client.Create(ctx, reader); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.Client.Delete(context.Background(), binding)
		_ = kube.Client.Delete(context.Background(), reader)
	})
	prometheus, stranger := serviceAccountToken(t, s.Namespace, "prometheus"), serviceAccountToken(t, s.Namespace, "stranger")

	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// The manager's metrics certificate is self-signed (no --metrics-cert-dir).
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	get := func(scheme, token string) (int, string, error) {
		request, err := http.NewRequest(http.MethodGet, scheme+"://"+s.MetricsAddress+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			request.Header.Set("Authorization", "Bearer "+token)
		}
		response, err := httpClient.Do(request)
		if err != nil {
			return 0, "", err
		}
		defer response.Body.Close()
		body, err := io.ReadAll(response.Body)
		return response.StatusCode, string(body), err
	}

	// The listener comes up with the manager: wait for it, then ask without a token.
	var status int
	var body string
	testenv.Eventually(t, 30*time.Second, "the metrics listener", func() (err error) {
		status, body, err = get("https", "")
		return err
	})
	if status != http.StatusUnauthorized || strings.Contains(body, "certpilot_") {
		t.Errorf("no token: %d %.200q, want 401 and no metrics", status, body)
	}
	if status, body, err := get("https", "not-a-token"); err != nil || status != http.StatusUnauthorized {
		t.Errorf("a made-up token: %d %.200q %v, want 401", status, body, err)
	}
	if status, body, err := get("https", stranger); err != nil || status != http.StatusForbidden || strings.Contains(body, "certpilot_") {
		t.Errorf("a ServiceAccount without get /metrics: %d %.200q %v, want 403", status, body, err)
	}
	if status, body, err := get("https", prometheus); err != nil || status != http.StatusOK || !strings.Contains(body, "controller_runtime_reconcile_total") {
		t.Errorf("the metrics reader: %d %.200q %v, want 200 and the metrics", status, body, err)
	}
	if _, _, err := get("http", prometheus); err == nil {
		t.Error("plain HTTP answered on the secure metrics address")
	}
	if strings.Contains(s.Manager.Output(), prometheus) || strings.Contains(s.Manager.Output(), stranger) {
		t.Error("the manager logged a bearer token")
	}
}

// serviceAccountToken creates a ServiceAccount and returns a token for it (TokenRequest).
func serviceAccountToken(t *testing.T, namespace, name string) string {
	t.Helper()
	ctx := context.Background()
	account := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := kube.Client.Create(ctx, account); err != nil {
		t.Fatal(err)
	}
	request := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if err := kube.Client.SubResource("token").Create(ctx, account, request); err != nil {
		t.Fatalf("requesting a token for ServiceAccount %s/%s: %v", namespace, name, err)
	}
	if request.Status.Token == "" {
		t.Fatalf("no token for ServiceAccount %s/%s", namespace, name)
	}
	return request.Status.Token
}
