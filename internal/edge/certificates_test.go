package edge_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/testenv"
)

func served(t *testing.T, source edge.CertificateSource, serverName string) *tls.Certificate {
	t.Helper()
	certificate, err := source.GetCertificate(&tls.ClientHelloInfo{ServerName: serverName})
	if err != nil {
		return nil
	}
	return certificate
}

func TestCertificateStoreSelection(t *testing.T) {
	now := time.Now()
	exact := edgetest.SelfSignedCertificate(t, "a.example.com")
	wildcard := edgetest.SelfSignedCertificate(t, "*.example.com")
	fallback := edgetest.SelfSignedCertificate(t, "default.example")
	expired := edgetest.CertificateValid(t, now.Add(-48*time.Hour), now.Add(-time.Hour), "r.example.com")
	old := edgetest.CertificateValid(t, now.Add(-time.Hour), now.Add(time.Hour), "r.example.com")
	renewed := edgetest.CertificateValid(t, now.Add(-time.Minute), now.Add(90*24*time.Hour), "r.example.com")

	store := edge.NewCertificateStore()
	var count int
	var earliest time.Time
	store.OnChange(func(c int, e time.Time) { count, earliest = c, e })
	store.Expect("a")
	if store.Synced() {
		t.Error("Synced before the expected source delivered")
	}
	store.Replace("a", []*tls.Certificate{wildcard, expired, renewed})
	store.Replace("b", []*tls.Certificate{old, exact})
	if !store.Synced() {
		t.Error("not Synced after every expected source delivered")
	}
	if err := store.SetDefault(fallback); err != nil {
		t.Fatal(err)
	}

	for name, test := range map[string]struct {
		serverName string
		want       *tls.Certificate
	}{
		"exact beats wildcard":          {"a.example.com", exact},
		"case and trailing dot ignored": {"A.Example.COM.", exact},
		"wildcard covers one label":     {"b.example.com", wildcard},
		"wildcard not the apex":         {"example.com", fallback},
		"wildcard not two labels":       {"x.b.example.com", fallback},
		"no SNI gets the default":       {"", fallback},
		"valid and latest wins":         {"r.example.com", renewed},
	} {
		t.Run(name, func(t *testing.T) {
			if got := served(t, store, test.serverName); got != test.want {
				t.Errorf("served %v, want %v", leafNames(got), test.want.Leaf.DNSNames)
			}
		})
	}
	if count != 6 || !earliest.Equal(expired.Leaf.NotAfter) {
		t.Errorf("OnChange got %d certificates, earliest %v; want 6, %v", count, earliest, expired.Leaf.NotAfter)
	}

	// Replacing a source's set drops what it held; no default means a failed handshake.
	store.Replace("a", nil)
	if err := store.SetDefault(nil); err != nil {
		t.Fatal(err)
	}
	if got := served(t, store, "b.example.com"); got != nil {
		t.Errorf("served %v after the wildcard was removed, want none", leafNames(got))
	}
	if got := served(t, store, "r.example.com"); got != old {
		t.Errorf("served %v, want the remaining certificate", leafNames(got))
	}
}

func leafNames(certificate *tls.Certificate) []string {
	if certificate == nil || certificate.Leaf == nil {
		return nil
	}
	return certificate.Leaf.DNSNames
}

func TestParseBundles(t *testing.T) {
	a := edgetest.SelfSignedCertificate(t, "a.example.com")
	b := edgetest.SelfSignedCertificate(t, "b.example.com")
	keyFirst := func(c *tls.Certificate) []byte { return append(edgetest.KeyPEM(t, c), edgetest.ChainPEM(c)...) }
	keyLast := func(c *tls.Certificate) []byte { return append(edgetest.ChainPEM(c), edgetest.KeyPEM(t, c)...) }

	for name, test := range map[string]struct {
		data    []byte
		want    []*tls.Certificate
		wantErr bool
	}{
		"key first":               {append(keyFirst(a), keyFirst(b)...), []*tls.Certificate{a, b}, false},
		"key last":                {append(keyLast(a), keyLast(b)...), []*tls.Certificate{a, b}, false},
		"one bundle":              {keyLast(a), []*tls.Certificate{a}, false},
		"bad bundle skipped":      {append(keyFirst(a), append(edgetest.KeyPEM(t, b), edgetest.ChainPEM(a)...)...), []*tls.Certificate{a}, true},
		"nothing":                 {[]byte("not PEM"), nil, true},
		"certificate without key": {edgetest.ChainPEM(a), nil, true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := edge.ParseBundles(test.data)
			if (err != nil) != test.wantErr {
				t.Errorf("error %v, want error %v", err, test.wantErr)
			}
			if len(got) != len(test.want) {
				t.Fatalf("got %d certificates, want %d", len(got), len(test.want))
			}
			for i := range got {
				if !got[i].Leaf.Equal(test.want[i].Leaf) {
					t.Errorf("certificate %d is %v, want %v", i, got[i].Leaf.DNSNames, test.want[i].Leaf.DNSNames)
				}
			}
		})
	}
}

// writeKubeletVolume lays out files the way the kubelet publishes a Secret volume: a
// timestamped directory, the ..data link to it, and top-level links through ..data. Called
// again, it swaps ..data atomically, as the kubelet does on an update.
func writeKubeletVolume(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	version := filepath.Join(dir, "..v"+time.Now().Format("150405.000000000"))
	if err := os.Mkdir(version, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(version, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func TestCertificateDirSource(t *testing.T) {
	ctx := testContext(t)
	first := edgetest.SelfSignedCertificate(t, "dir.example.com")
	renewed := edgetest.CertificateValid(t, time.Now().Add(-time.Minute), time.Now().Add(48*time.Hour), "dir.example.com")
	volume, bundles := t.TempDir(), t.TempDir()
	writeKubeletVolume(t, volume, map[string][]byte{
		"tls.crt": edgetest.ChainPEM(first), "tls.key": edgetest.KeyPEM(t, first), "ca.crt": edgetest.ChainPEM(first),
	})
	other := edgetest.SelfSignedCertificate(t, "bundle.example.com")
	if err := os.WriteFile(filepath.Join(bundles, "other.pem"), edgetest.CertificatePEM(t, other), 0o600); err != nil {
		t.Fatal(err)
	}

	store := edge.NewCertificateStore()
	source := edge.NewCertificateDirSource([]string{volume, bundles}, 0, store, testr.New(t))
	done := make(chan error, 1)
	go func() { done <- source.Run(ctx) }()
	edgetest.Eventually(t, 5*time.Second, func() error {
		if !store.Synced() || served(t, store, "dir.example.com") == nil || served(t, store, "bundle.example.com") == nil {
			return errNotYet
		}
		return nil
	})
	if got := served(t, store, "dir.example.com"); !got.Leaf.Equal(first.Leaf) {
		t.Fatalf("served %v, want the mounted certificate", got.Leaf.SerialNumber)
	}

	// The kubelet swaps ..data: the renewed certificate is served without a restart.
	writeKubeletVolume(t, volume, map[string][]byte{"tls.crt": edgetest.ChainPEM(renewed), "tls.key": edgetest.KeyPEM(t, renewed)})
	edgetest.Eventually(t, 5*time.Second, func() error {
		if got := served(t, store, "dir.example.com"); got == nil || !got.Leaf.Equal(renewed.Leaf) {
			return errNotYet
		}
		return nil
	})
}

// startCertificateSecretSource runs a CertificateSecretSource over namespace until the test
// ends and waits until store has synced.
func startCertificateSecretSource(t *testing.T, ctx context.Context, namespace string, store *edge.CertificateStore, metrics *edge.Metrics) {
	t.Helper()
	source, err := edge.NewCertificateSecretSource(kube.Config, []string{namespace}, store, metrics, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	sourceCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- source.Run(sourceCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	edgetest.Eventually(t, 10*time.Second, func() error {
		if !store.Synced() {
			return errNotYet
		}
		return nil
	})
}

// metricValue returns the value of the counter or gauge name with labels (nil: none), 0 when
// it has no such series.
func metricValue(t *testing.T, metrics *edge.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
	series:
		for _, metric := range family.GetMetric() {
			for _, label := range metric.GetLabel() {
				if labels[label.GetName()] != label.GetValue() {
					continue series
				}
			}
			if metric.GetCounter() != nil {
				return metric.GetCounter().GetValue()
			}
			return metric.GetGauge().GetValue()
		}
	}
	return 0
}

// TestCertificateSecretSource: the edge serves a certificate Secret for a name only when a
// Certificate of its namespace controls it, lists the name and records its serial as issued;
// it never reads claim Secrets; a renewal is served once the status records it, the previous
// certificate until then.
func TestCertificateSecretSource(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := testContext(t)
	watched, other := createNamespace(t, ctx, "edge-certs"), createNamespace(t, ctx, "edge-certs-other")

	www := edgetest.SelfSignedCertificate(t, "www.example.com")
	wwwCert := edgetest.Issued(ctx, t, kube.Client, watched, "www", www, "www.example.com")
	// In another namespace, issued as well: not watched.
	edgetest.Issued(ctx, t, kube.Client, other, "elsewhere", edgetest.SelfSignedCertificate(t, "elsewhere.example.com"), "elsewhere.example.com")

	later := func(names ...string) *tls.Certificate {
		return edgetest.CertificateValid(t, time.Now().Add(-time.Minute), time.Now().Add(100*365*24*time.Hour), names...)
	}
	notOurs := edgetest.CertificateSecret(watched, "not-ours", "not-ours", edgetest.SelfSignedCertificate(t, "foreign.example.com"), t)
	notOurs.Labels = nil
	// certpilot's account key Secrets carry the managed-by label but name no Certificate.
	account := edgetest.CertificateSecret(watched, "account", "", edgetest.SelfSignedCertificate(t, "account.example.com"), t)
	delete(account.Labels, v1alpha1.LabelCertificate)
	// A tenant's Secret with certpilot's labels and a later NotAfter, for a name www serves.
	tenant := edgetest.CertificateSecret(watched, "tenant-tls", "www", later("www.example.com"), t)
	// The same, claiming to be controlled by www's Certificate, with a serial never issued.
	forged := edgetest.CertificateSecret(watched, "forged-tls", "www", later("www.example.com"), t)
	forged.OwnerReferences = []metav1.OwnerReference{edgetest.ControllerReference(wwwCert)}
	// Controlled by www's Certificate, for a name it does not list.
	uncovered := edgetest.CertificateSecret(watched, "uncovered-tls", "www", later("admin.example.com"), t)
	uncovered.OwnerReferences = []metav1.OwnerReference{edgetest.ControllerReference(wwwCert)}
	// Claim Secrets hold the key of a certificate not issued yet: one labelled as a claim, one
	// an older manager made with only a certificate Secret's labels.
	claim := edgetest.CertificateSecret(watched, "www-tls"+v1alpha1.ClaimSecretSuffix, "www", later("claim.example.com"), t)
	claim.OwnerReferences = []metav1.OwnerReference{edgetest.ControllerReference(wwwCert)}
	labelledClaim := claim.DeepCopy()
	labelledClaim.Name = "labelled-claim"
	labelledClaim.Labels[v1alpha1.LabelClaim] = "true"
	for _, secret := range []*corev1.Secret{notOurs, account, tenant, forged, uncovered, claim, labelledClaim} {
		if err := kube.Client.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}

	store, metrics := edge.NewCertificateStore(), edge.NewMetrics()
	startCertificateSecretSource(t, ctx, watched, store, metrics)
	edgetest.Eventually(t, 10*time.Second, func() error {
		if got := served(t, store, "www.example.com"); got == nil || !got.Leaf.Equal(www.Leaf) {
			return fmt.Errorf("www.example.com: served %v, want the issued certificate", leafNames(got))
		}
		return nil
	})
	for _, name := range []string{"elsewhere.example.com", "foreign.example.com", "account.example.com", "admin.example.com", "claim.example.com"} {
		if got := served(t, store, name); got != nil {
			t.Errorf("%s: served a certificate certpilot did not issue for it", name)
		}
	}
	// Held: www-tls, tenant-tls, forged-tls, uncovered-tls; not the claims.
	if got := metricValue(t, metrics, "certpilot_edge_cached_secrets", nil); got != 4 {
		t.Errorf("certpilot_edge_cached_secrets = %v, want 4 (the claim Secrets are not held)", got)
	}
	for reason, want := range map[string]float64{"not_controlled": 1, "serial_not_issued": 1, "name_not_covered": 1} {
		if got := metricValue(t, metrics, "certpilot_edge_certificates_refused_total", map[string]string{"reason": reason}); got != want {
			t.Errorf("refused with reason %s: %v, want %v", reason, got, want)
		}
	}

	// Renewal: the manager writes the Secret, then the status. Until the status records the new
	// serial the certificate issued before is served on.
	renewed := edgetest.CertificateValid(t, time.Now().Add(-time.Minute), time.Now().Add(48*time.Hour), "www.example.com")
	secret := edgetest.CertificateSecret(watched, "www-tls", "www", renewed, t)
	secret.OwnerReferences = []metav1.OwnerReference{edgetest.ControllerReference(wwwCert)}
	if err := kube.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 10*time.Second, func() error {
		if metricValue(t, metrics, "certpilot_edge_certificates_refused_total", map[string]string{"reason": "serial_not_issued"}) != 2 {
			return errNotYet
		}
		return nil
	})
	if got := served(t, store, "www.example.com"); got == nil || !got.Leaf.Equal(www.Leaf) {
		t.Errorf("before the status records the renewal: served %v, want the certificate issued before", leafNames(got))
	}
	edgetest.Issued(ctx, t, kube.Client, watched, "www", renewed)
	edgetest.Eventually(t, 10*time.Second, func() error {
		if got := served(t, store, "www.example.com"); got == nil || !got.Leaf.Equal(renewed.Leaf) {
			return errNotYet
		}
		return nil
	})
	// Deleted: no longer served.
	if err := kube.Client.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 10*time.Second, func() error {
		if served(t, store, "www.example.com") != nil {
			return errNotYet
		}
		return nil
	})
}

// errNotYet is what an Eventually check returns while the awaited state has not come.
var errNotYet = errors.New("not yet")
