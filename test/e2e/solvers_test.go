package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestHTTP01ThroughTheEdge: Pebble validates http-01 against the edge's port 80, which answers
// from the challenge Secret.
func TestHTTP01ThroughTheEdge(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-http", 0)

	cert := s.TLSALPN01Certificate("plain", "plain.http.test", "www.http.test")
	cert.Spec.Solver = &certpilotv1alpha1.Solver{HTTP01: &certpilotv1alpha1.HTTP01Solver{
		LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: testenv.EdgeDeployment},
		ProbeAddress: fmt.Sprintf("127.0.0.1:%d", s.Pebble.HTTPPort),
	}}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	verifySecret(t, s.Pebble, cert)
	if len(cert.Status.Order.Challenges) != len(cert.Spec.DNSNames) {
		t.Errorf("challenges %+v, want one per name", cert.Status.Order.Challenges)
	}
	for _, challenge := range cert.Status.Order.Challenges {
		if challenge.Type != "http-01" || challenge.State != "valid" {
			t.Errorf("challenge %+v, want a valid http-01", challenge)
		}
	}
	waitNoChallengeResponses(t, s)
}

// TestDNS01RFC2136Wildcard: a wildcard and its apex in one Certificate, validated by Pebble
// through TXT records certpilot creates on a real BIND 9 with TSIG, removed afterwards; and each
// broken setup reports precisely, without an order storm at the CA.
func TestDNS01RFC2136Wildcard(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	bind := testenv.StartBIND(t, "certpilot.test")
	s := startStackWith(t, "e2e-rfc2136", testenv.PebbleOptions{DNSServer: bind.Address, NonceRejectPercent: 5})

	tsig := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tsig", Namespace: s.Namespace},
		Data:       map[string][]byte{"secret": []byte(bind.TSIGSecret), "wrong": []byte("d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldA==")},
	}
	if err := kube.Client.Create(ctx, tsig); err != nil {
		t.Fatal(err)
	}
	rfc2136 := func(nameserver, key string) *certpilotv1alpha1.Solver {
		return &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{RFC2136: &certpilotv1alpha1.RFC2136DNS01{
			Nameserver: nameserver, TSIGKeyName: bind.TSIGKeyName, TSIGAlgorithm: bind.TSIGAlgorithm,
			TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: "tsig", Key: key},
		}}}
	}

	cert := s.TLSALPN01Certificate("wildcard", "*.certpilot.test", "certpilot.test")
	cert.Spec.Solver = rfc2136(bind.Address, "secret")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	verifySecret(t, s.Pebble, cert)
	if cert.Status.AutoRenewable == nil || !*cert.Status.AutoRenewable {
		t.Errorf("autoRenewable = %v, want true for rfc2136", cert.Status.AutoRenewable)
	}
	// The records go right after the status write that says Ready.
	testenv.Eventually(t, 30*time.Second, "the TXT records removed after issuance", func() error {
		if values, err := bind.TXT("_acme-challenge.certpilot.test."); err != nil || len(values) != 0 {
			return fmt.Errorf("TXT records left after issuance: %v (%v)", values, err)
		}
		return nil
	})
	// The cleanup finalizer stays for the renewals (no finalizer write per issuance).
	if !slices.Contains(cert.Finalizers, "certpilot.dev/challenge-cleanup") {
		t.Errorf("finalizers %v after issuance, want certpilot.dev/challenge-cleanup kept", cert.Finalizers)
	}

	t.Run("deleted mid-order", func(t *testing.T) {
		// The record is published at BIND, but the self-check asks a nameserver that does not
		// answer: the order stays open with the record in the zone.
		c := s.TLSALPN01Certificate("midorder", "midorder.certpilot.test")
		c.Spec.Solver = rfc2136(bind.Address, "secret")
		c.Spec.Solver.DNS01.Nameservers = []string{testenv.FreeAddress(t)}
		if err := kube.Client.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		record := "_acme-challenge.midorder.certpilot.test."
		testenv.Eventually(t, time.Minute, "the record published, the order open", func() error {
			if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
				return err
			}
			if r := meta.FindStatusCondition(c.Status.Conditions, certpilotv1alpha1.ConditionReconciling); r == nil || r.Reason != "DNSRecordNotVisible" {
				return fmt.Errorf("conditions %+v", c.Status.Conditions)
			}
			if values, err := bind.TXT(record); err != nil || len(values) == 0 {
				return fmt.Errorf("TXT %v (%v)", values, err)
			}
			return nil
		})
		if err := kube.Client.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, time.Minute, "the Certificate deleted", func() error {
			if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(c), c); err == nil {
				return fmt.Errorf("the Certificate still exists, finalizers %v", c.Finalizers)
			}
			return nil
		})
		if values, err := bind.TXT(record); err != nil || len(values) != 0 {
			t.Errorf("TXT records left by the deleted Certificate: %v (%v)", values, err)
		}
	})

	// Broken setups: each says what is wrong and keeps its one order.
	ordersBefore := s.Pebble.OrderCount()
	broken := map[string]struct {
		solver *certpilotv1alpha1.Solver
		name   string
		reason string
	}{
		"wrong TSIG key":         {solver: rfc2136(bind.Address, "wrong"), name: "badkey.certpilot.test", reason: "DNSUpdateUnauthorized"},
		"unreachable nameserver": {solver: rfc2136(testenv.FreeAddress(t), "secret"), name: "unreachable.certpilot.test", reason: "DNSServerUnreachable"},
		"zone refuses":           {solver: rfc2136(bind.Address, "secret"), name: "www." + strings.TrimSuffix(bind.RefusedZone, "."), reason: "DNSUpdateRefused"},
	}
	var certs []*certpilotv1alpha1.Certificate
	for desc, tc := range broken {
		c := s.TLSALPN01Certificate(strings.ToLower(strings.ReplaceAll(desc, " ", "-")), tc.name)
		c.Spec.Solver = tc.solver
		if err := kube.Client.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
		t.Run(desc, func(t *testing.T) {
			testenv.Eventually(t, time.Minute, tc.reason, func() error {
				if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
					return err
				}
				if r := meta.FindStatusCondition(c.Status.Conditions, certpilotv1alpha1.ConditionReconciling); r == nil || r.Reason != tc.reason {
					return fmt.Errorf("conditions %+v", c.Status.Conditions)
				}
				return nil
			})
		})
	}
	// Let each retry at least twice (counted by the manager's reconcile counter, not by a
	// sleep): still one order each, and no validation attempted.
	retried := reconcileCount(t, s) + float64(2*len(certs))
	testenv.Eventually(t, 2*time.Minute, "broken certificates retried", func() error {
		if n := reconcileCount(t, s); n < retried {
			return fmt.Errorf("%v reconciles, waiting for %v", n, retried)
		}
		return nil
	})
	if orders := s.Pebble.OrderCount() - ordersBefore; orders != len(certs) {
		t.Errorf("Pebble saw %d orders for %d broken certificates, want one each", orders, len(certs))
	}
	for _, tc := range broken {
		if n := s.Pebble.ValidationAttempts(tc.name); n != 0 {
			t.Errorf("Pebble attempted %d validations of %s", n, tc.name)
		}
	}
}

// TestDNS01Manual: the status and an Event give the exact TXT record; the certificate waits with
// a clear message until the record exists, then goes Ready.
func TestDNS01Manual(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-manual", 0)

	cert := s.TLSALPN01Certificate("manual", "manual.test")
	cert.Spec.Solver = &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
		Manual:      &certpilotv1alpha1.ManualDNS01{},
		Nameservers: []string{s.Pebble.DNSAddress}, // where the "public" records are
	}}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	record := regexp.MustCompile(`TXT record (\S+) with value "([^"]+)"`)
	var name, value string
	testenv.Eventually(t, time.Minute, "the record to create", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		reconciling := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
		if reconciling == nil || reconciling.Reason != "DNSRecordRequired" {
			return fmt.Errorf("conditions %+v", cert.Status.Conditions)
		}
		match := record.FindStringSubmatch(reconciling.Message)
		if match == nil || match[1] != "_acme-challenge.manual.test." {
			return fmt.Errorf("the message does not name the record: %q", reconciling.Message)
		}
		name, value = match[1], match[2]
		return nil
	})
	if cert.Status.AutoRenewable == nil || *cert.Status.AutoRenewable {
		t.Errorf("autoRenewable = %v, want false", cert.Status.AutoRenewable)
	}
	waitForEvents(t, cert, 30*time.Second, "DNSRecordRequired")

	// The person creates the record.
	if err := s.Pebble.SetTXT(name, value); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 3*time.Minute, "")
}

// TestMixedSolvers: one Certificate whose wildcard is validated through dns01 (RFC 2136 on
// BIND) and whose apex through tls-alpn-01 at the edge, selected per name.
func TestMixedSolvers(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	bind := testenv.StartBIND(t, "mixed.test")
	s := startStackWith(t, "e2e-mixed", testenv.PebbleOptions{DNSServer: bind.Address})
	// Pebble resolves the apex through BIND for tls-alpn-01: point it at the edge.
	if err := bind.AddA("mixed.test.", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	tsig := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tsig", Namespace: s.Namespace},
		Data:       map[string][]byte{"secret": []byte(bind.TSIGSecret)},
	}
	if err := kube.Client.Create(ctx, tsig); err != nil {
		t.Fatal(err)
	}
	cert := s.TLSALPN01Certificate("mixed", "mixed.test", "*.mixed.test") // spec.solver: tls-alpn-01
	cert.Spec.Solvers = []certpilotv1alpha1.NamedSolver{{
		DNSNames: []string{"*.mixed.test"},
		Solver: certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{RFC2136: &certpilotv1alpha1.RFC2136DNS01{
			Nameserver: bind.Address, TSIGKeyName: bind.TSIGKeyName, TSIGAlgorithm: bind.TSIGAlgorithm,
			TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: "tsig", Key: "secret"},
		}}},
	}}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	types := map[string]string{}
	for _, challenge := range cert.Status.Order.Challenges {
		types[challenge.DNSName] = challenge.Type
	}
	if types["mixed.test"] != "tls-alpn-01" || types["*.mixed.test"] != "dns-01" {
		t.Errorf("challenge types %v, want tls-alpn-01 for the apex and dns-01 for the wildcard", types)
	}
	verifySecret(t, s.Pebble, cert)
}
