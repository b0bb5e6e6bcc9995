package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }

// now is the fixed clock of the tests; whole seconds, as the API stores times.
var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// run runs the plugin in-process with args against the test apiserver and returns its stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(kube.Config, kubeconfig); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	p := newPlugin(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &stdout, ErrOut: &stderr})
	p.now = func() time.Time { return now }
	p.isTerminal = func(io.Writer) bool { return false } // as under a pipe
	root := newRootCommand(p)
	root.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	err := root.ExecuteContext(context.Background())
	if stderr.Len() > 0 {
		t.Logf("stderr of %v:\n%s", args, stderr.String())
	}
	return stdout.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("kubectl certpilot %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func createNamespace(t *testing.T, name string) {
	t.Helper()
	if err := kube.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
}

// createCertificate creates a Certificate and, when status is not nil, writes its status
// through the status subresource as the controller would.
func createCertificate(t *testing.T, namespace, name string, status *certpilotv1alpha1.CertificateStatus) *certpilotv1alpha1.Certificate {
	t.Helper()
	ctx := context.Background()
	certificate := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{name + ".example.com", "example.com"},
			SecretName: name + "-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "letsencrypt"},
		},
	}
	if err := kube.Client.Create(ctx, certificate); err != nil {
		t.Fatal(err)
	}
	if status != nil {
		certificate.Status = *status
		if err := kube.Client.Status().Update(ctx, certificate); err != nil {
			t.Fatal(err)
		}
	}
	return certificate
}

func issuedStatus(notAfter time.Time, ready metav1.ConditionStatus, autoRenewable bool) *certpilotv1alpha1.CertificateStatus {
	return &certpilotv1alpha1.CertificateStatus{
		NotBefore:         &metav1.Time{Time: notAfter.Add(-45 * 24 * time.Hour)},
		NotAfter:          &metav1.Time{Time: notAfter},
		RenewalTime:       &metav1.Time{Time: notAfter.Add(-7 * 24 * time.Hour)},
		RenewalTimeSource: "ari",
		RenewalInfo: &certpilotv1alpha1.RenewalInfoStatus{
			WindowStart: &metav1.Time{Time: notAfter.Add(-8 * 24 * time.Hour)},
			WindowEnd:   &metav1.Time{Time: notAfter.Add(-6 * 24 * time.Hour)},
		},
		AutoRenewable: ptr.To(autoRenewable),
		SerialNumber:  "0a1b2c",
		Conditions: []metav1.Condition{{
			Type: certpilotv1alpha1.ConditionReady, Status: ready, Reason: "Issued", Message: "certificate is valid",
			LastTransitionTime: metav1.Time{Time: now.Add(-time.Hour)},
		}},
	}
}

func TestLsColourBands(t *testing.T) {
	testenv.SkipIfShort(t)
	createNamespace(t, "ls-bands")
	day := 24 * time.Hour
	createCertificate(t, "ls-bands", "expired", issuedStatus(now.Add(-day), metav1.ConditionFalse, true))
	createCertificate(t, "ls-bands", "urgent", issuedStatus(now.Add(2*day), metav1.ConditionTrue, true))
	createCertificate(t, "ls-bands", "soon", issuedStatus(now.Add(5*day), metav1.ConditionTrue, false))
	createCertificate(t, "ls-bands", "later", issuedStatus(now.Add(30*day), metav1.ConditionTrue, true))
	createCertificate(t, "ls-bands", "new", nil)

	plain := "" +
		"NAME      SUBJECT               DAYS LEFT   READY     AUTO-RENEW   SECRET\n" +
		"expired   expired.example.com   -1          False     true         expired-tls\n" +
		"later     later.example.com     30          True      true         later-tls\n" +
		"new       new.example.com       -           Unknown   -            new-tls\n" +
		"soon      soon.example.com      5           True      false        soon-tls\n" +
		"urgent    urgent.example.com    2           True      true         urgent-tls\n"
	// Not a terminal: no colour, by default and with --color=auto or never.
	for _, args := range [][]string{{"ls", "-n", "ls-bands"}, {"ls", "-n", "ls-bands", "--color=auto"}, {"ls", "-n", "ls-bands", "--color=never"}} {
		if got := mustRun(t, args...); got != plain {
			t.Errorf("%v:\n%s\nwant:\n%s", args, got, plain)
		}
	}

	colored := mustRun(t, "ls", "-n", "ls-bands", "--color=always")
	for name, want := range map[string]string{
		"expired": "\x1b[31m-1\x1b[0m ",
		"urgent":  "\x1b[93m2\x1b[0m ",
		"soon":    "\x1b[33m5\x1b[0m ",
		"later":   "\x1b[32m30\x1b[0m ",
	} {
		line := lineOf(colored, name+" ")
		if !strings.Contains(line, want) {
			t.Errorf("--color=always: line of %s is %q, want it to contain %q", name, line, want)
		}
	}
	if line := lineOf(colored, "new "); strings.Contains(line, "\x1b[") {
		t.Errorf("--color=always: a certificate not issued yet is coloured: %q", line)
	}
	// Colour codes do not shift the columns: stripped of them the output is the plain one.
	if stripped := stripANSI(colored); stripped != plain {
		t.Errorf("--color=always without its colour codes:\n%s\nwant:\n%s", stripped, plain)
	}

	if _, err := run(t, "ls", "-n", "ls-bands", "--color=sometimes"); err == nil {
		t.Error("--color=sometimes was accepted")
	}
}

func TestLsAllNamespaces(t *testing.T) {
	testenv.SkipIfShort(t)
	createNamespace(t, "ls-all-a")
	createNamespace(t, "ls-all-b")
	createCertificate(t, "ls-all-a", "one", issuedStatus(now.Add(10*24*time.Hour), metav1.ConditionTrue, true))
	createCertificate(t, "ls-all-b", "two", nil)

	out := mustRun(t, "ls", "-A")
	if !strings.HasPrefix(out, "NAMESPACE ") {
		t.Errorf("ls -A does not start with a NAMESPACE column:\n%s", out)
	}
	for _, want := range []string{"ls-all-a    one ", "ls-all-b    two "} {
		if !strings.Contains(stripSpaces(out), stripSpaces(want)) {
			t.Errorf("ls -A misses %q:\n%s", want, out)
		}
	}
	// Without -A only the namespace asked for.
	out = mustRun(t, "ls", "-n", "ls-all-b")
	if strings.Contains(out, "one") || !strings.Contains(out, "two") || strings.HasPrefix(out, "NAMESPACE") {
		t.Errorf("ls -n ls-all-b:\n%s", out)
	}
}

func TestRenew(t *testing.T) {
	testenv.SkipIfShort(t)
	createNamespace(t, "renew")
	createCertificate(t, "renew", "www", issuedStatus(now.Add(30*24*time.Hour), metav1.ConditionTrue, true))

	out := mustRun(t, "renew", "www", "-n", "renew")
	want := now.Format(time.RFC3339)
	if !strings.Contains(out, want) {
		t.Errorf("renew output %q does not name the request %s", out, want)
	}
	var certificate certpilotv1alpha1.Certificate
	if err := kube.Client.Get(context.Background(), client.ObjectKey{Namespace: "renew", Name: "www"}, &certificate); err != nil {
		t.Fatal(err)
	}
	if got := certificate.Annotations[certpilotv1alpha1.AnnotationRenew]; got != want {
		t.Errorf("annotation %s = %q, want %q", certpilotv1alpha1.AnnotationRenew, got, want)
	}
	if _, err := run(t, "renew", "missing", "-n", "renew"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("renew of a missing Certificate: %v, want a not found error", err)
	}
}

func TestStatusAndDNS(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	createNamespace(t, "status")
	status := issuedStatus(now.Add(5*24*time.Hour), metav1.ConditionTrue, false)
	status.Conditions = append(status.Conditions, metav1.Condition{
		Type: certpilotv1alpha1.ConditionIssuing, Status: metav1.ConditionTrue, Reason: "Ordered",
		Message: "waiting for the CA to validate", LastTransitionTime: metav1.Time{Time: now.Add(-time.Minute)},
	})
	status.FailedIssuanceAttempts = 2
	status.LastFailureTime = &metav1.Time{Time: now.Add(-2 * time.Hour)}
	status.IssuerRef = &certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "zerossl"}
	status.CurrentIssuer = &certpilotv1alpha1.CurrentIssuerStatus{Kind: "ClusterIssuer", Name: "zerossl", Reason: "RateLimited"}
	status.Order = &certpilotv1alpha1.OrderStatus{
		URL: "https://ca.example/order/17", State: "pending", DNSNames: []string{"www.example.com", "example.com"},
		Challenges: []certpilotv1alpha1.ChallengeStatus{
			{DNSName: "www.example.com", Type: "tls-alpn-01", State: "valid"},
			{DNSName: "example.com", Type: "dns-01", State: "pending",
				Reason: `create TXT _acme-challenge.example.com "abc123"`},
		},
	}
	certificate := createCertificate(t, "status", "www", status)
	event := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: "status", Name: "www.issue-failed"},
		EventTime:  metav1.MicroTime{Time: now.Add(-30 * time.Minute)},
		Regarding: corev1.ObjectReference{
			APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate",
			Namespace: "status", Name: "www", UID: certificate.UID,
		},
		Type: corev1.EventTypeWarning, Reason: "IssuanceFailed", Action: "Issue",
		Note: "www.example.com: connection refused", ReportingController: "certpilot.dev/certpilot", ReportingInstance: "test",
	}
	if err := kube.Client.Create(ctx, event); err != nil {
		t.Fatal(err)
	}
	// An event about another object of the same name is not shown.
	other := event.DeepCopy()
	other.Name, other.ResourceVersion = "www.other", ""
	other.Regarding = corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: "status", Name: "www"}
	other.Note = "about the Secret"
	if err := kube.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}

	out := mustRun(t, "status", "www", "-n", "status")
	for _, want := range []string{
		"DNS names:       www.example.com, example.com",
		"Issuer:          ClusterIssuer/letsencrypt",
		"Issuing with:    ClusterIssuer/zerossl, 0 failed attempts there; moved on from the issuer before: RateLimited",
		"  Issued by:       ClusterIssuer/zerossl",
		"  Not after:       2026-12-02T12:00:00Z (in 5d, 5 days left)",
		"  Next renewal:    2026-11-25T12:00:00Z (2d ago)",
		"  Renewal chosen:  ari (inside the CA's suggested window)",
		"  CA's window:     2026-11-24T12:00:00Z to 2026-11-26T12:00:00Z",
		"  Auto-renewable:  false",
		"  Ready     True     Issued    60m ago   certificate is valid",
		"  Issuing   True     Ordered   60s ago   waiting for the CA to validate",
		"  URL:             https://ca.example/order/17",
		"  State:           pending",
		"    www.example.com   tls-alpn-01   valid     -",
		`example.com       dns-01        pending   create TXT _acme-challenge.example.com "abc123"`,
		"  Attempts:        2 since the last success",
		"  Last failure:    2026-11-27T10:00:00Z (120m ago)",
		"  30m ago     Warning   IssuanceFailed   www.example.com: connection refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status misses %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "about the Secret") || strings.Contains(out, "\x1b[") {
		t.Errorf("status shows another object's event or colour codes:\n%s", out)
	}

	out = mustRun(t, "dns", "www", "-n", "status")
	want := "TXT RECORD                    STATE     RECORD / REASON\n" +
		`_acme-challenge.example.com   pending   create TXT _acme-challenge.example.com "abc123"` + "\n"
	if out != want {
		t.Errorf("dns:\n%s\nwant:\n%s", out, want)
	}
	// The CA's window could not be fetched: the fallback time stands, and status says so.
	fallback := issuedStatus(now.Add(20*24*time.Hour), metav1.ConditionTrue, true)
	fallback.RenewalTimeSource = "fallback"
	fallback.RenewalInfo = &certpilotv1alpha1.RenewalInfoStatus{
		Error:     "fetching ACME renewal information: 503 Service Unavailable",
		NextFetch: &metav1.Time{Time: now.Add(30 * time.Minute)},
	}
	createCertificate(t, "status", "fallback", fallback)
	out = mustRun(t, "status", "fallback", "-n", "status")
	for _, want := range []string{
		"  Next renewal:    2026-12-10T12:00:00Z (in 13d)",
		"  Renewal chosen:  fallback (from the certificate's dates)",
		"  Window fetch:    failed: fetching ACME renewal information: 503 Service Unavailable",
		"  Next fetch:      2026-11-27T12:30:00Z (in 30m)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status of a certificate on its fallback time misses %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "CA's window") {
		t.Errorf("status shows a CA's window that was never fetched:\n%s", out)
	}
	createCertificate(t, "status", "plain", issuedStatus(now.Add(30*24*time.Hour), metav1.ConditionTrue, true))
	if out := mustRun(t, "dns", "plain", "-n", "status"); out != "Certificate status/plain: no dns-01 or dns-persist-01 challenges\n" {
		t.Errorf("dns of a certificate without dns-01 challenges: %q", out)
	}
	if out := mustRun(t, "status", "plain", "-n", "status"); !strings.Contains(out, "Order:\n  none\n") || !strings.Contains(out, "Events:\n  none\n") {
		t.Errorf("status of a certificate without order or events:\n%s", out)
	}
}

func TestDaysLeft(t *testing.T) {
	day := 24 * time.Hour
	for name, tc := range map[string]struct {
		notAfter  time.Time
		wantText  string
		wantColor string
	}{
		"not issued":           {time.Time{}, "-", ""},
		"expired a day ago":    {now.Add(-day), "-1", ansiRed},
		"expiring now":         {now, "0", ansiRed},
		"expired a second ago": {now.Add(-time.Second), "-1", ansiRed},
		"an hour left":         {now.Add(time.Hour), "0", ansiBrightYellow},
		"just under 3 days":    {now.Add(3*day - time.Second), "2", ansiBrightYellow},
		"3 days":               {now.Add(3 * day), "3", ansiYellow},
		"just under 7 days":    {now.Add(7*day - time.Second), "6", ansiYellow},
		"7 days":               {now.Add(7 * day), "7", ansiGreen},
		"90 days":              {now.Add(90 * day), "90", ansiGreen},
	} {
		t.Run(name, func(t *testing.T) {
			var notAfter *metav1.Time
			if !tc.notAfter.IsZero() {
				notAfter = &metav1.Time{Time: tc.notAfter}
			}
			got := daysLeft(notAfter, now)
			if got.text != tc.wantText || got.color != tc.wantColor {
				t.Errorf("daysLeft = (%q, %q), want (%q, %q)", got.text, got.color, tc.wantText, tc.wantColor)
			}
		})
	}
}

func lineOf(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return fmt.Sprintf("<no line starting with %q>", prefix)
}

func stripANSI(s string) string {
	for _, code := range []string{ansiRed, ansiGreen, ansiYellow, ansiBrightYellow, ansiReset} {
		s = strings.ReplaceAll(s, code, "")
	}
	return s
}

func stripSpaces(s string) string { return strings.Join(strings.Fields(s), " ") }
