package edge_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

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

func certificateSecret(namespace, name string, certificate *tls.Certificate, t *testing.T) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels: map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelCertificate: name},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": edgetest.ChainPEM(certificate), "tls.key": edgetest.KeyPEM(t, certificate)},
	}
}

func TestCertificateSecretSource(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := testContext(t)
	watched, other := createNamespace(t, ctx, "edge-certs"), createNamespace(t, ctx, "edge-certs-other")
	clientset, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}

	www := edgetest.SelfSignedCertificate(t, "www.example.com")
	notOurs := certificateSecret(watched, "not-ours", edgetest.SelfSignedCertificate(t, "foreign.example.com"), t)
	notOurs.Labels = nil
	// certpilot's account key Secrets carry the managed-by label but name no Certificate.
	account := certificateSecret(watched, "account", edgetest.SelfSignedCertificate(t, "account.example.com"), t)
	delete(account.Labels, v1alpha1.LabelCertificate)
	for _, secret := range []*corev1.Secret{
		certificateSecret(watched, "www-tls", www, t),
		certificateSecret(other, "elsewhere-tls", edgetest.SelfSignedCertificate(t, "elsewhere.example.com"), t),
		notOurs,
		account,
	} {
		if err := kube.Client.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}

	store := edge.NewCertificateStore()
	source := edge.NewCertificateSecretSource(clientset, []string{watched}, store, testr.New(t))
	go func() { _ = source.Run(ctx) }()
	edgetest.Eventually(t, 10*time.Second, func() error {
		if !store.Synced() {
			return errNotYet
		}
		return nil
	})
	if got := served(t, store, "www.example.com"); got == nil || !got.Leaf.Equal(www.Leaf) {
		t.Errorf("www.example.com: served %v, want the Secret's certificate", leafNames(got))
	}
	for _, name := range []string{"elsewhere.example.com", "foreign.example.com", "account.example.com"} {
		if got := served(t, store, name); got != nil {
			t.Errorf("%s: served a certificate from a Secret outside the selection", name)
		}
	}

	// Renewal: the Secret is updated in place.
	renewed := edgetest.CertificateValid(t, time.Now().Add(-time.Minute), time.Now().Add(48*time.Hour), "www.example.com")
	if err := kube.Client.Update(ctx, certificateSecret(watched, "www-tls", renewed, t)); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 10*time.Second, func() error {
		if got := served(t, store, "www.example.com"); got == nil || !got.Leaf.Equal(renewed.Leaf) {
			return errNotYet
		}
		return nil
	})
	// Deleted: no longer served.
	if err := kube.Client.Delete(ctx, certificateSecret(watched, "www-tls", renewed, t)); err != nil {
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
