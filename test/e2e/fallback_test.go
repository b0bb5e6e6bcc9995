package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// newOrderTap sits in front of a Pebble's ACME port: while refusing is set it answers every
// new order with 429 rateLimited (Retry-After 1 s) instead of forwarding it, and it records each
// new order's payload, forwarded or not.
type newOrderTap struct {
	refusing atomic.Bool

	mu      sync.Mutex
	refused int
	orders  []newOrderPayload
}

// newOrderPayload is what the proxy read of a new-order request.
type newOrderPayload struct {
	Replaces    string `json:"replaces"`
	Identifiers []struct {
		Value string `json:"value"`
	} `json:"identifiers"`
}

func (tap *newOrderTap) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/order-plz" {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var jws struct {
			Payload string `json:"payload"`
		}
		var order newOrderPayload
		if json.Unmarshal(body, &jws) == nil {
			if payload, err := base64.RawURLEncoding.DecodeString(jws.Payload); err == nil {
				_ = json.Unmarshal(payload, &order)
			}
		}
		tap.mu.Lock()
		tap.orders = append(tap.orders, order)
		refuse := tap.refusing.Load()
		if refuse {
			tap.refused++
		}
		tap.mu.Unlock()
		if refuse {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"refused by the test proxy","status":429}`)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// seen returns the new orders recorded so far and how many were refused.
func (tap *newOrderTap) seen() ([]newOrderPayload, int) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return append([]newOrderPayload(nil), tap.orders...), tap.refused
}

// TestIssuerFallback: a Certificate lists a first issuer whose CA rate-limits every new order
// and a fallback issuer at another CA. The certificate is issued by the fallback (one refused
// order at the first CA, one order at the second), status.issuerRef names it, and a renewal
// requested once the first CA accepts orders again goes back to the first issuer, without
// naming the second CA's certificate in `replaces`; the renewal after that, of the first CA's
// own certificate, names it. Then the first CA goes down, and the next renewal is the
// fallback's again.
func TestIssuerFallback(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-fallback", 0) // its ClusterIssuer is the fallback

	// The first CA validates through the same edge: its validation authority dials the same ports.
	firstCA := testenv.StartPebble(t, testenv.PebbleOptions{HTTPPort: s.Pebble.HTTPPort, TLSPort: s.Pebble.TLSPort})
	tap := &newOrderTap{}
	tap.refusing.Store(true)
	proxy, err := firstCA.StartProxy(tap.wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	first := &certpilotv1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: s.Namespace + "-first"},
		Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
			Server: proxy.DirectoryURL(), Email: "ops@example.com", CABundle: firstCA.CABundle,
			PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "first-account"},
		}},
	}
	if err := kube.Client.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Client.Delete(context.Background(), first) })
	waitIssuerReady(t, first)

	cert := s.TLSALPN01Certificate("fallback", "fallback.test")
	cert.Spec.IssuerRef = certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: first.Name}
	cert.Spec.FallbackIssuerRefs = []certpilotv1alpha1.IssuerReference{{Kind: "ClusterIssuer", Name: s.Issuer}}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	_, secret := verifySecret(t, s.Pebble, cert)
	if cert.Status.IssuerRef == nil || cert.Status.IssuerRef.Name != s.Issuer {
		t.Errorf("status.issuerRef = %+v, want the fallback %s", cert.Status.IssuerRef, s.Issuer)
	}
	if cert.Status.CurrentIssuer != nil {
		t.Errorf("status.currentIssuer = %+v after the issuance, want none", cert.Status.CurrentIssuer)
	}
	if got := secret.Annotations["certpilot.dev/acme-server"]; got != s.Pebble.DirectoryURL() {
		t.Errorf("the Secret records ACME server %q, want the fallback CA %s", got, s.Pebble.DirectoryURL())
	}
	orders, refused := tap.seen()
	if refused != 1 || len(orders) != 1 {
		t.Errorf("the first CA saw %d new orders, %d refused; want exactly one, refused", len(orders), refused)
	}
	if n := s.Pebble.OrderCount(); n != 1 {
		t.Errorf("the fallback CA saw %d orders, want 1", n)
	}
	waitForEvents(t, cert, 30*time.Second, "CASlowDown", "IssuerFallback", "Issued")
	fallbackSerial := cert.Status.SerialNumber

	// The first CA accepts orders again: a renewal starts at the first issuer, once the account's
	// pause after its rateLimited answer (Retry-After 1 s, recorded in the issuer's status) is
	// over; during it, an issuance moves on to the fallback at once.
	tap.refusing.Store(false)
	testenv.Eventually(t, 30*time.Second, "the first issuer's pause over", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(first), first); err != nil {
			return err
		}
		if until := first.Status.OrdersPausedUntil; until != nil && time.Now().Before(until.Time) {
			return fmt.Errorf("new orders with the first issuer's account are paused until %s", until.Time)
		}
		return nil
	})
	requestRenewalOf(t, cert, "first-again")
	waitReady(t, cert, 2*time.Minute, fallbackSerial)
	_, secret = verifySecret(t, firstCA, cert)
	if cert.Status.IssuerRef == nil || cert.Status.IssuerRef.Name != first.Name {
		t.Errorf("status.issuerRef = %+v after the renewal, want the first issuer %s", cert.Status.IssuerRef, first.Name)
	}
	if got := secret.Annotations["certpilot.dev/issuer-name"]; got != first.Name {
		t.Errorf("the Secret records issuer %q, want %s", got, first.Name)
	}
	orders, _ = tap.seen()
	if len(orders) != 2 || orders[1].Replaces != "" {
		t.Fatalf("new orders at the first CA: %+v; want a second one without replaces (the second CA issued the certificate it renews)", orders)
	}
	if n := s.Pebble.OrderCount(); n != 1 {
		t.Errorf("the fallback CA saw %d orders after the renewal, want still 1", n)
	}

	// Renewing the first CA's own certificate names it in replaces.
	firstSerial := cert.Status.SerialNumber
	requestRenewalOf(t, cert, "first-replaces")
	waitReady(t, cert, 2*time.Minute, firstSerial)
	orders, _ = tap.seen()
	if len(orders) != 3 || orders[2].Replaces == "" {
		t.Errorf("new orders at the first CA: %+v; want a third one naming the certificate it replaces", orders)
	}
	if cert.Status.IssuerRef == nil || cert.Status.IssuerRef.Name != first.Name {
		t.Errorf("status.issuerRef = %+v, want %s", cert.Status.IssuerRef, first.Name)
	}

	// The first CA goes down (connections refused): the next renewal is the fallback's again,
	// whose order does not name the first CA's certificate (Pebble would refuse it).
	proxy.Close()
	ordersAtFallback := s.Pebble.OrderCount()
	requestRenewalOf(t, cert, "first-down")
	waitReady(t, cert, 2*time.Minute, cert.Status.SerialNumber)
	verifySecret(t, s.Pebble, cert)
	if cert.Status.IssuerRef == nil || cert.Status.IssuerRef.Name != s.Issuer {
		t.Errorf("status.issuerRef = %+v with the first CA down, want the fallback %s", cert.Status.IssuerRef, s.Issuer)
	}
	if n := s.Pebble.OrderCount() - ordersAtFallback; n != 1 {
		t.Errorf("the fallback CA saw %d more orders, want 1", n)
	}
}

// waitIssuerReady waits for a ClusterIssuer to be Ready.
func waitIssuerReady(t *testing.T, issuer *certpilotv1alpha1.ClusterIssuer) {
	t.Helper()
	testenv.Eventually(t, time.Minute, "ClusterIssuer "+issuer.Name+" Ready", func() error {
		if err := kube.Client.Get(context.Background(), client.ObjectKeyFromObject(issuer), issuer); err != nil {
			return err
		}
		for _, c := range issuer.Status.Conditions {
			if c.Type == certpilotv1alpha1.ConditionReady && c.Status == metav1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", issuer.Status.Conditions)
	})
}

// requestRenewalOf sets the renew annotation of cert to value.
func requestRenewalOf(t *testing.T, cert *certpilotv1alpha1.Certificate, value string) {
	t.Helper()
	patch := client.MergeFrom(cert.DeepCopy())
	if cert.Annotations == nil {
		cert.Annotations = map[string]string{}
	}
	cert.Annotations[certpilotv1alpha1.AnnotationRenew] = value
	if err := kube.Client.Patch(context.Background(), cert, patch); err != nil {
		t.Fatal(err)
	}
}
