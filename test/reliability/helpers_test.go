package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// createCertificates creates n tls-alpn-01 Certificates <prefix>-<i> for <prefix>-<i>.<domain>
// through the stack's edge.
func createCertificates(t testing.TB, s *testenv.Stack, prefix, domain string, n int) []*certpilotv1alpha1.Certificate {
	t.Helper()
	certs := make([]*certpilotv1alpha1.Certificate, 0, n)
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		cert := s.TLSALPN01Certificate(name, name+"."+domain)
		if err := kube.Client.Create(context.Background(), cert); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
	return certs
}

// waitAllReady waits until every Certificate is Ready, refreshing each in place.
func waitAllReady(t testing.TB, certs []*certpilotv1alpha1.Certificate, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, "every Certificate Ready", func() error {
		notReady := 0
		var example string
		for _, cert := range certs {
			if err := kube.Client.Get(context.Background(), client.ObjectKeyFromObject(cert), cert); err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) || cert.Status.SerialNumber == "" {
				notReady++
				if example == "" {
					example = fmt.Sprintf("%s: conditions %+v, order %+v", cert.Name, cert.Status.Conditions, cert.Status.Order)
				}
			}
		}
		if notReady > 0 {
			return fmt.Errorf("%d of %d not Ready, for example %s", notReady, len(certs), example)
		}
		return nil
	})
}

// checkStored checks each Certificate's Secret: a chain for the Certificate's names whose leaf
// matches the private key next to it and is the serial the status names.
func checkStored(t testing.TB, certs []*certpilotv1alpha1.Certificate) {
	t.Helper()
	for _, cert := range certs {
		secret := &corev1.Secret{}
		if err := kube.Client.Get(context.Background(), client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, secret); err != nil {
			t.Errorf("Certificate %s: %v", cert.Name, err)
			continue
		}
		leaf, err := pki.ParseLeaf(secret.Data[corev1.TLSCertKey])
		if err != nil {
			t.Errorf("Secret %s: tls.crt: %v", secret.Name, err)
			continue
		}
		key, err := pki.DecodePrivateKey(secret.Data[corev1.TLSPrivateKeyKey])
		if err != nil || !pki.KeyMatches(leaf, key) {
			t.Errorf("Secret %s: tls.key does not match tls.crt (%v)", secret.Name, err)
		}
		if !pki.DNSNamesEqual(leaf, cert.Spec.DNSNames) {
			t.Errorf("Secret %s: names %v, want %v", secret.Name, leaf.DNSNames, cert.Spec.DNSNames)
		}
		if got := fmt.Sprintf("%x", leaf.SerialNumber); got != cert.Status.SerialNumber {
			t.Errorf("Certificate %s: status serial %s, Secret serial %s", cert.Name, cert.Status.SerialNumber, got)
		}
	}
}

// caCounts are what the CA saw: orders created and certificates issued.
type caCounts struct{ orders, issued int }

func countsAt(p *testenv.Pebble) caCounts {
	return caCounts{orders: p.OrderCount(), issued: p.IssuedCount()}
}

func (c caCounts) since(before caCounts) caCounts {
	return caCounts{orders: c.orders - before.orders, issued: c.issued - before.issued}
}

// checkIssuedOnce fails unless the CA issued exactly one certificate per issuance and saw at
// most extraOrders orders beyond one per issuance.
func checkIssuedOnce(t testing.TB, got caCounts, issuances, extraOrders int) {
	t.Helper()
	if got.issued != issuances {
		t.Errorf("the CA issued %d certificates for %d issuances, want exactly one each", got.issued, issuances)
	}
	if got.orders < issuances || got.orders > issuances+extraOrders {
		t.Errorf("the CA saw %d orders for %d issuances, want %d to %d", got.orders, issuances, issuances, issuances+extraOrders)
	}
}

// figure logs a line for docs/reliability.md, marked so that it can be grepped from -v output.
func figure(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE %s: %s", t.Name(), fmt.Sprintf(format, args...))
}

// managerLogged reports whether the manager's output since offset has a line with message msg
// for one of names.
func managerLogged(s *testenv.Stack, offset int, msg string, names []string) (string, bool) {
	for _, line := range strings.Split(s.Manager.Output()[offset:], "\n") {
		if !strings.Contains(line, `"msg":"`+msg+`"`) {
			continue
		}
		for _, name := range names {
			if strings.Contains(line, `"name":"`+name+`"`) {
				return name, true
			}
		}
	}
	return "", false
}

// waitForAnOrder waits until the manager logged, since offset, an order for one of certs.
func waitForAnOrder(t *testing.T, s *testenv.Stack, offset int, certs []*certpilotv1alpha1.Certificate) {
	t.Helper()
	testenv.Eventually(t, time.Minute, "an order created", func() error {
		if _, ok := managerLogged(s, offset, "Created ACME order", names(certs)); !ok {
			return fmt.Errorf("no order yet")
		}
		return nil
	})
}

func names(certs []*certpilotv1alpha1.Certificate) []string {
	out := make([]string, len(certs))
	for i, cert := range certs {
		out[i] = cert.Name
	}
	return out
}
