package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestResumeOrderAfterRestart: the order URL is recorded before challenges are touched, so a
// manager that stops mid-order and starts again finishes that order instead of opening another.
func TestResumeOrderAfterRestart(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-resume", 0)

	cert := s.TLSALPN01Certificate("resume", "resume.test")
	goodProbe := cert.Spec.Solver.TLSALPN01.ProbeAddress
	cert.Spec.Solver.TLSALPN01.ProbeAddress = testenv.FreeAddress(t) // the self-check fails: the order stays open
	if err := s.AllowProbeAddress(ctx, cert.Spec.Solver.TLSALPN01.ProbeAddress); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "order open, self-check failing", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if cert.Status.Order == nil || len(cert.Status.Order.Challenges) != 1 || cert.Status.Order.Challenges[0].State != "self-check-failed" {
			return fmt.Errorf("order %+v", cert.Status.Order)
		}
		return nil
	})
	if got := kstatusOf(t, cert); got != status.InProgressStatus {
		t.Errorf("kstatus while issuing = %s, want InProgress", got)
	}
	orderURL := cert.Status.Order.URL

	s.StopManager()
	patch := client.MergeFrom(cert.DeepCopy())
	cert.Spec.Solver.TLSALPN01.ProbeAddress = goodProbe
	if err := kube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	if err := s.StartManager(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	if cert.Status.Order.URL != orderURL {
		t.Errorf("after the restart the certificate came from order %s, want the recorded %s", cert.Status.Order.URL, orderURL)
	}
	if got := kstatusOf(t, cert); got != status.CurrentStatus {
		t.Errorf("kstatus when Ready = %s, want Current", got)
	}
}

// TestValidationFailureBacksOff: when the CA cannot validate, the failure is counted, reported
// in a Warning Event and the conditions, and the next attempt waits (1 minute after the first
// failure): no order storm at the CA.
func TestValidationFailureBacksOff(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-backoff", 0)

	// The self-check dials 127.0.0.1 and passes; the CA resolves the name to 127.0.0.2, where
	// nothing listens, and fails the validation.
	if err := s.Pebble.AddA("unreachable.backoff.test", "127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	cert := s.TLSALPN01Certificate("unreachable", "unreachable.backoff.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "failure recorded", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if cert.Status.FailedIssuanceAttempts != 1 || cert.Status.LastFailureTime == nil {
			return fmt.Errorf("failedIssuanceAttempts %d, conditions %+v", cert.Status.FailedIssuanceAttempts, cert.Status.Conditions)
		}
		return nil
	})
	failedOrder := cert.Status.Order.URL
	reconciling := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
	if reconciling == nil || !strings.Contains(reconciling.Message, "next in 1m0s") || !strings.Contains(reconciling.Message, "unreachable.backoff.test") {
		t.Errorf("Reconciling condition %+v does not tell the name and the next attempt", reconciling)
	}
	if meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) {
		t.Error("Ready is True after a failed issuance")
	}
	waitForEvents(t, cert, 30*time.Second, "OrderInvalid")

	// A reconcile during the backoff (caused here by an annotation, and known to have run from
	// the manager's reconcile counter) orders nothing and counts no new failure.
	pokeAndWaitForReconcile(t, s, cert)
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		t.Fatal(err)
	}
	if cert.Status.Order.URL != failedOrder || cert.Status.FailedIssuanceAttempts != 1 {
		t.Fatalf("retried during the backoff: order %s, attempts %d", cert.Status.Order.URL, cert.Status.FailedIssuanceAttempts)
	}
}

// TestRenewOnRequestAndSpecChange: the renew annotation and a change of names each issue a new
// certificate, once.
func TestRenewOnRequestAndSpecChange(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	// Six-day certificates, like Let's Encrypt's shortlived profile: they renew at half-life,
	// not 7 days (renewBefore) before expiry, which would be before they were issued.
	s := startStack(t, "e2e-renew", 6*24*time.Hour)

	cert := s.TLSALPN01Certificate("renew", "renew.test")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	keys := newKeyHistory(t, s.Namespace, cert)
	first := cert.Status.SerialNumber
	lifetime := cert.Status.NotAfter.Sub(cert.Status.NotBefore.Time)
	// Pebble publishes renewal windows (ARI): the renewal time is inside the window. Without
	// one, the fallback is half the lifetime, earlier by a jitter of at most 3 % of it. Status
	// times are whole seconds: allow one second of rounding.
	got := cert.Status.RenewalTime.Sub(cert.Status.NotBefore.Time)
	switch info := cert.Status.RenewalInfo; cert.Status.RenewalTimeSource {
	case "ari":
		if info == nil || cert.Status.RenewalTime.Before(info.WindowStart) || info.WindowEnd.Before(cert.Status.RenewalTime) {
			t.Errorf("renewal time %v from ARI is outside the window %+v", cert.Status.RenewalTime, info)
		}
		if got < lifetime/3 {
			t.Errorf("a %s certificate renews %s after notBefore: before a third of its lifetime", lifetime, got)
		}
	case "fallback":
		if half := lifetime / 2; got > half+time.Second || got < half-lifetime*3/100-time.Second {
			t.Errorf("a %s certificate renews %s after notBefore, want about %s (half its lifetime, jittered)", lifetime, got, half)
		}
	default:
		t.Errorf("renewalTimeSource = %q, want ari or fallback", cert.Status.RenewalTimeSource)
	}

	// A deleted Secret is issued again.
	if err := kube.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: "renew-tls"}}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, first)
	keys.add(cert) // a fresh key, not the deleted certificate's
	first = cert.Status.SerialNumber

	patch := client.MergeFrom(cert.DeepCopy())
	cert.Annotations = map[string]string{certpilotv1alpha1.AnnotationRenew: "2026-11-27T10:00:00Z"}
	if err := kube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, first)
	if cert.Status.RenewalRequest != "2026-11-27T10:00:00Z" {
		t.Errorf("renewalRequest = %q", cert.Status.RenewalRequest)
	}
	keys.add(cert)
	second := cert.Status.SerialNumber

	patch = client.MergeFrom(cert.DeepCopy())
	cert.Spec.DNSNames = append(cert.Spec.DNSNames, "www.renew.test")
	if err := kube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, second)
	if !slices.Equal(cert.Status.Order.DNSNames, []string{"renew.test", "www.renew.test"}) {
		t.Errorf("order names %v", cert.Status.Order.DNSNames)
	}
	keys.add(cert)
	third := cert.Status.SerialNumber

	// Nothing else to do: the serial stays.
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		t.Fatal(err)
	}
	if cert.Status.SerialNumber != third {
		t.Errorf("serial changed again without a reason: %s then %s", third, cert.Status.SerialNumber)
	}
}

// keyHistory checks, after each issuance of one Certificate, that the certificate Secret holds a
// private key no earlier revision had, that status.revision counted the issuance, and that the
// claim Secret holds the served key (the next key lives there; no other Secret holds one).
type keyHistory struct {
	t         *testing.T
	namespace string
	seen      map[string]int64
	revision  int64
}

func newKeyHistory(t *testing.T, namespace string, cert *certpilotv1alpha1.Certificate) *keyHistory {
	h := &keyHistory{t: t, namespace: namespace, seen: map[string]int64{}}
	h.add(cert)
	return h
}

func (h *keyHistory) add(cert *certpilotv1alpha1.Certificate) {
	h.t.Helper()
	ctx := context.Background()
	h.revision++
	if cert.Status.Revision != h.revision {
		h.t.Errorf("status.revision = %d after issuance %d", cert.Status.Revision, h.revision)
	}
	secret, claim := &corev1.Secret{}, &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: h.namespace, Name: cert.Spec.SecretName}, secret); err != nil {
		h.t.Fatal(err)
	}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: h.namespace, Name: cert.Spec.SecretName + certpilotv1alpha1.ClaimSecretSuffix}, claim); err != nil {
		h.t.Fatalf("the claim Secret: %v", err)
	}
	served := string(secret.Data[corev1.TLSPrivateKeyKey])
	if served == "" {
		h.t.Fatalf("Secret %s holds no key", secret.Name)
	}
	if string(claim.Data[corev1.TLSPrivateKeyKey]) != served {
		h.t.Errorf("the claim Secret does not hold the key of revision %d", h.revision)
	}
	// The order was recorded in the claim, with the key, before anything was published.
	var recorded struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal([]byte(claim.Annotations["certpilot.dev/open-order"]), &recorded)
	if order := secret.Annotations["certpilot.dev/order"]; recorded.URL != order || cert.Status.Order == nil || cert.Status.Order.URL != order {
		h.t.Errorf("revision %d: the claim records order %q, the Secret came from %q, the status records %+v", h.revision, recorded.URL, order, cert.Status.Order)
	}
	if earlier, ok := h.seen[served]; ok {
		h.t.Errorf("revision %d reuses the private key of revision %d", h.revision, earlier)
	}
	h.seen[served] = h.revision
	legacy := &corev1.Secret{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: h.namespace, Name: cert.Name + certpilotv1alpha1.NextKeySecretSuffix}, legacy); !apierrors.IsNotFound(err) {
		h.t.Errorf("a next-key Secret exists (%v): the next key belongs in the claim", err)
	}
}

// kstatusOf computes the status Argo CD and Flux would see.
func kstatusOf(t *testing.T, cert *certpilotv1alpha1.Certificate) status.Status {
	t.Helper()
	object, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cert)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: object}
	u.SetAPIVersion(certpilotv1alpha1.GroupVersion.String())
	u.SetKind("Certificate")
	result, err := status.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return result.Status
}

// TestKillAtEachStep: a manager killed with SIGKILL at any step of the flow and started again
// finishes the certificate, and the CA sees at most one extra order per kill.
func TestKillAtEachStep(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-kill", 0)

	steps := []string{"Created ACME order", "Published challenge responses", "Accepted challenges", "Finalized order", "Stored certificate"}
	for i, step := range steps {
		name := fmt.Sprintf("kill-%d", i)
		t.Run(step, func(t *testing.T) {
			ordersBefore := s.Pebble.OrderCount()
			logsBefore := len(s.Manager.Output())
			cert := s.TLSALPN01Certificate(name, name+".kill.test")
			if err := kube.Client.Create(ctx, cert); err != nil {
				t.Fatal(err)
			}
			// Kill the manager the moment it logs the step for this certificate.
			testenv.Eventually(t, time.Minute, "step "+step, func() error {
				for _, line := range strings.Split(s.Manager.Output()[logsBefore:], "\n") {
					if strings.Contains(line, `"msg":"`+step+`"`) && strings.Contains(line, `"name":"`+name+`"`) {
						return nil
					}
				}
				return fmt.Errorf("the manager has not logged %q for %s", step, name)
			})
			s.KillManager()
			if err := s.StartManager(); err != nil {
				t.Fatal(err)
			}
			waitReady(t, cert, 2*time.Minute, "")
			if orders := s.Pebble.OrderCount() - ordersBefore; orders > 2 {
				t.Errorf("Pebble saw %d orders for one certificate and one kill, want at most 2", orders)
			} else {
				t.Logf("killed after %q: %d order(s)", step, orders)
			}
		})
	}
}

// TestWatchNamespaces: a manager confined with --watch-namespaces issues in its namespaces and
// leaves Certificates elsewhere alone. It runs under the RBAC the Helm chart renders with
// watchNamespaces (Roles in the watched and the release namespace, a ClusterRole for
// ClusterIssuers) and nothing else, with the flags the chart gives it: those permissions are
// enough (no request of the manager is forbidden), and it may not read Secrets elsewhere.
func TestWatchNamespaces(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	watchedNamespace := testenv.Namespace(t, "e2e-watched")
	s := startStackOptions(t, "e2e-watched", testenv.PebbleOptions{}, testenv.StackOptions{ChartValues: map[string]any{
		"watchNamespaces": []any{watchedNamespace},
		// The Ingress source's watch and its Roles too.
		"sources": map[string]any{"ingress": map[string]any{"enabled": true}},
		// No RBAC on StatefulSets and DaemonSets: the manager (--inject-kinds=Deployment) must
		// not watch them, or its caches never sync and requests are forbidden.
		"injection": map[string]any{"kinds": []any{"Deployment"}},
	}})
	unwatched := testenv.Namespace(t, "e2e-unwatched")
	if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: unwatched}}); err != nil {
		t.Fatal(err)
	}
	elsewhere := s.TLSALPN01Certificate("elsewhere", "elsewhere.watched.test")
	elsewhere.Namespace = unwatched
	if err := kube.Client.Create(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}
	// A Secret of the kind the manager caches, in the namespace it does not watch.
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere-tls", Namespace: unwatched, Labels: map[string]string{
		certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue,
	}}}
	if err := kube.Client.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	before := append(namespaceObjects(t, unwatched), "Certificate elsewhere@"+elsewhere.ResourceVersion)
	watched := s.TLSALPN01Certificate("watched", "watched.test")
	if err := kube.Client.Create(ctx, watched); err != nil {
		t.Fatal(err)
	}
	waitReady(t, watched, 2*time.Minute, "")
	verifySecret(t, s.Pebble, watched)
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(elsewhere), elsewhere); err != nil {
		t.Fatal(err)
	}
	if len(elsewhere.Status.Conditions) != 0 || elsewhere.Status.Order != nil {
		t.Errorf("a Certificate outside --watch-namespaces was reconciled: %+v", elsewhere.Status)
	}
	if after := append(namespaceObjects(t, unwatched), "Certificate elsewhere@"+elsewhere.ResourceVersion); !slices.Equal(before, after) {
		t.Errorf("objects in the unwatched namespace changed:\nbefore %v\nafter  %v", before, after)
	}

	manager := managerClient(t, s)
	if want := testenv.ServiceAccountUser(s.Namespace+"-system", s.Namespace); s.ManagerUser != want {
		t.Errorf("the manager is %q, want the chart release's ServiceAccount %q", s.ManagerUser, want)
	}
	system := s.Namespace + "-system"
	checkAccess(t, manager, []accessCheck{
		{"get", "", "secrets", unwatched, false},
		{"list", "", "secrets", unwatched, false},
		{"list", "", "secrets", "", false},
		{"watch", "certpilot.dev", "certificates", "", false},
		{"patch", "apps", "deployments", unwatched, false},
		{"list", "networking.k8s.io", "ingresses", unwatched, false},
		{"get", "", "secrets", s.Namespace, true},
		{"patch", "certpilot.dev", "certificates/status", s.Namespace, true},
		{"list", "networking.k8s.io", "ingresses", s.Namespace, true},
		{"get", "", "secrets", system, true},
		{"update", "coordination.k8s.io", "leases", system, true},
		{"watch", "certpilot.dev", "clusterissuers", "", true},
		{"patch", "certpilot.dev", "clusterissuers/status", "", true},
		// The chart's default metrics.secure: who scrapes /metrics, and may they.
		{"create", "authentication.k8s.io", "tokenreviews", "", true},
		{"create", "authorization.k8s.io", "subjectaccessreviews", "", true},
	})
	var forbidden []string
	for _, line := range strings.Split(s.Manager.Output(), "\n") {
		if strings.Contains(line, "forbidden") {
			forbidden = append(forbidden, line)
		}
	}
	if len(forbidden) > 0 {
		t.Errorf("the manager was refused %d requests under the chart's Roles:\n%s", len(forbidden), strings.Join(forbidden, "\n"))
	}
	if exited, err := s.Manager.Exited(); exited {
		t.Errorf("the manager exited: %v", err)
	}
}
