package reliability

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/policy"
	"github.com/certpilot/certpilot/internal/testenv"
)

// The hostile-tenant suite: a tenant with create on certpilot's kinds in its own namespace
// points a namespaced Issuer at servers of its own, and asks shared ClusterIssuers for names
// that are not its own. What it writes must not reach past its grant: no connection to an
// address the administrator did not grant, no byte of a non-ACME answer in a status or an Event,
// no order for a name outside the namespace's grant, no unbounded read by the manager.

const (
	// tenantSecret is what the cluster's "internal services" answer; it must never appear in
	// a status or an Event.
	tenantSecret = "db_password=hunter2-tenant-leak"
	// grantedCAAddress is where the tenant's own ACME servers listen: the one loopback address
	// the test's administrator grants namespaced Issuers (--allow-private-dials). The internal
	// services listen on 127.0.0.1, which is not granted.
	grantedCAAddress = "127.0.0.2"
)

// countingListener serves handler on address (TLS with cert when given) and counts the
// connections it accepts: "never dialled" is a count of 0.
type countingListener struct {
	URL         string
	connections atomic.Int64
}

func serveCounting(t *testing.T, address string, cert *tls.Certificate, handler http.Handler) *countingListener {
	t.Helper()
	listener, err := net.Listen("tcp", address+":0")
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingListener{URL: "http://" + listener.Addr().String()}
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				counting.connections.Add(1)
			}
		}}
	if cert != nil {
		counting.URL = "https://" + listener.Addr().String()
		listener = tls.NewListener(listener, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	}
	go server.Serve(listener) //nolint:errcheck // ends with Close
	t.Cleanup(func() { server.Close() })
	return counting
}

// selfSignedCert returns a certificate for the IP addresses, and its PEM for a caBundle.
func selfSignedCert(t *testing.T, ips ...string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "tenant CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, ip := range ips {
		template.IPAddresses = append(template.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// tenantCA is an ACME-looking server a tenant runs: enough of RFC 8555 for an account to
// register (so the Issuer becomes Ready), with newOrder and the directory's entries replaced
// by a case.
type tenantCA struct {
	*countingListener
	directory map[string]string
	// newOrders counts the new-order requests of cases that count them.
	newOrders atomic.Int64
}

func startTenantCA(t *testing.T, cert *tls.Certificate, mux func(ca *tenantCA, mux *http.ServeMux)) *tenantCA {
	t.Helper()
	ca := &tenantCA{directory: map[string]string{}}
	routes := http.NewServeMux()
	routes.HandleFunc("GET /dir", func(w http.ResponseWriter, _ *http.Request) {
		directory := map[string]string{"newNonce": ca.URL + "/nonce", "newAccount": ca.URL + "/new-acct", "newOrder": ca.URL + "/new-order"}
		for key, value := range ca.directory {
			directory[key] = value
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(directory) //nolint:errcheck
	})
	routes.HandleFunc("/nonce", func(http.ResponseWriter, *http.Request) {})
	routes.HandleFunc("POST /new-acct", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Location", ca.URL+"/acct/1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"status":"valid"}`)
	})
	if mux != nil {
		mux(ca, routes)
	}
	nonces := atomic.Int64{}
	withNonce := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Replay-Nonce", "nonce-"+strconv.FormatInt(nonces.Add(1), 10))
		w.Header().Set("Cache-Control", "no-store")
		routes.ServeHTTP(w, r)
	})
	ca.countingListener = serveCounting(t, grantedCAAddress, cert, withNonce)
	return ca
}

// writeOrder answers a newOrder with an order for identifiers and authzURLs.
func writeOrder(w http.ResponseWriter, ca *tenantCA, identifiers, authzURLs []string) {
	type identifier struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	order := struct {
		Status         string       `json:"status"`
		Identifiers    []identifier `json:"identifiers"`
		Authorizations []string     `json:"authorizations"`
		Finalize       string       `json:"finalize"`
	}{Status: "pending", Authorizations: authzURLs, Finalize: ca.URL + "/finalize/1"}
	for _, name := range identifiers {
		order.Identifiers = append(order.Identifiers, identifier{Type: "dns", Value: name})
	}
	w.Header().Set("Location", ca.URL+"/order/1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(order) //nolint:errcheck
}

// managerRSS returns the manager's resident set size in bytes (Linux /proc).
func managerRSS(t *testing.T, s *testenv.Stack) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Manager.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if value, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kib << 10
		}
	}
	t.Fatal("no VmRSS in /proc/<pid>/status")
	return 0
}

// managerHeap returns the manager's heap in use in bytes (go_memstats_heap_inuse_bytes on its
// metrics endpoint): unlike RSS, it falls again when what was allocated is collected.
func managerHeap(t *testing.T, s *testenv.Stack) int64 {
	t.Helper()
	response, err := http.Get("http://" + s.MetricsAddress + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if value, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			bytes, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				t.Fatal(err)
			}
			return int64(bytes)
		}
	}
	t.Fatal("no go_memstats_heap_inuse_bytes in the manager's metrics")
	return 0
}

func TestHostileTenant(t *testing.T) {
	testenv.SkipIfShort(t)
	// Four certificate workers, of which one issuer's CA may hold three (--issuer-workers-max).
	s := startHostileStack(t, "tenancy", testenv.PebbleOptions{}, "--allow-private-dials="+grantedCAAddress+"/32", "--certificate-workers=4", "--issuer-workers-max=3")
	started := time.Now()
	ctx := context.Background()
	tenant := s.Namespace + "-tenant"
	createNamespaces(t, tenant)
	deleteWhenDone(t, tenant, s.Namespace)

	caCert, caBundle := selfSignedCert(t, grantedCAAddress, "127.0.0.1")
	internalCert, internalBundle := selfSignedCert(t, "127.0.0.1")
	// The cluster's internal services: they answer anything with a secret.
	internal := serveCounting(t, "127.0.0.1", nil, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, tenantSecret)
	}))
	internalTLS := serveCounting(t, "127.0.0.1", &internalCert, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintln(w, tenantSecret)
	}))

	newIssuer := func(t *testing.T, name, server string, bundle []byte) *certpilotv1alpha1.Issuer {
		t.Helper()
		issuer := &certpilotv1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tenant},
			Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
				Server: server, CABundle: bundle, PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: name + "-account"},
			}},
		}
		if err := kube.Client.Create(ctx, issuer); err != nil {
			t.Fatal(err)
		}
		return issuer
	}
	issuerCondition := func(t *testing.T, issuer *certpilotv1alpha1.Issuer, want string) string {
		t.Helper()
		var message string
		testenv.Eventually(t, time.Minute, "the Issuer's Ready condition says "+want, func() error {
			if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
				return err
			}
			ready := meta.FindStatusCondition(issuer.Status.Conditions, certpilotv1alpha1.ConditionReady)
			if ready == nil || !strings.Contains(ready.Message, want) {
				return fmt.Errorf("Ready is %+v", ready)
			}
			message = ready.Message
			return nil
		})
		return message
	}
	manualCertificate := func(t *testing.T, namespace, name string, issuerRef certpilotv1alpha1.IssuerReference, dnsNames ...string) *certpilotv1alpha1.Certificate {
		t.Helper()
		cert := &certpilotv1alpha1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Spec: certpilotv1alpha1.CertificateSpec{
				DNSNames: dnsNames, SecretName: name + "-tls", IssuerRef: issuerRef,
				Solver: &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}}},
			},
		}
		if err := kube.Client.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		return cert
	}
	certificateSays := func(t *testing.T, cert *certpilotv1alpha1.Certificate, want string) {
		t.Helper()
		testenv.Eventually(t, time.Minute, "the Certificate's status says "+want, func() error {
			if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
				return err
			}
			for _, condition := range cert.Status.Conditions {
				if strings.Contains(condition.Message, want) {
					return nil
				}
			}
			return fmt.Errorf("conditions %+v", cert.Status.Conditions)
		})
	}

	t.Run("issuer/server on an internal address is not dialled", func(t *testing.T) {
		issuer := newIssuer(t, "internal-server", internalTLS.URL+"/dir", internalBundle)
		issuerCondition(t, issuer, "not granted by the administrator (--allow-private-dials)")
	})
	t.Run("issuer/server named localhost is refused after resolution", func(t *testing.T) {
		port := internalTLS.URL[strings.LastIndex(internalTLS.URL, ":")+1:]
		issuer := newIssuer(t, "localhost-server", "https://localhost:"+port+"/dir", internalBundle)
		issuerCondition(t, issuer, "certpilot does not dial")
	})
	t.Run("issuer/server on the metadata address is never dialled", func(t *testing.T) {
		issuer := newIssuer(t, "metadata-server", "https://169.254.169.254/dir", nil)
		issuerCondition(t, issuer, "certpilot never dials 169.254.169.254 for a tenant: a link-local address")
	})
	t.Run("issuer/redirect to an internal service is not followed", func(t *testing.T) {
		ca := startTenantCA(t, &caCert, func(_ *tenantCA, mux *http.ServeMux) {
			mux.HandleFunc("GET /moved", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, internal.URL+"/dir", http.StatusFound)
			})
		})
		issuer := newIssuer(t, "redirect", ca.URL+"/moved", caBundle)
		issuerCondition(t, issuer, "follows no redirects")
	})
	t.Run("issuer/directory naming an internal newOrder is refused", func(t *testing.T) {
		ca := startTenantCA(t, &caCert, nil)
		ca.directory["newOrder"] = internal.URL + "/anything"
		issuer := newIssuer(t, "internal-neworder", ca.URL+"/dir", caBundle)
		issuerCondition(t, issuer, "only to the directory's scheme and host")
	})
	t.Run("issuer/directory answering 404 with a secret is not repeated", func(t *testing.T) {
		ca := startTenantCA(t, &caCert, func(_ *tenantCA, mux *http.ServeMux) {
			mux.HandleFunc("GET /gone", func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprintln(w, tenantSecret)
			})
		})
		issuer := newIssuer(t, "directory-404", ca.URL+"/gone", caBundle)
		issuerCondition(t, issuer, "404 : Not Found")
	})
	t.Run("issuer/directory answering 200 with a secret is not repeated", func(t *testing.T) {
		ca := startTenantCA(t, &caCert, func(_ *tenantCA, mux *http.ServeMux) {
			mux.HandleFunc("GET /text", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, tenantSecret) })
		})
		issuer := newIssuer(t, "directory-200", ca.URL+"/text", caBundle)
		issuerCondition(t, issuer, "fetching ACME directory")
	})
	t.Run("issuer/a 1 GiB directory leaves the manager's memory alone", func(t *testing.T) {
		var written atomic.Int64
		ca := startTenantCA(t, &caCert, func(_ *tenantCA, mux *http.ServeMux) {
			mux.HandleFunc("GET /huge", func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprint(w, `{"newOrder":"`)
				chunk := []byte(strings.Repeat("x", 64<<10))
				for written.Load() < 1<<30 {
					n, err := w.Write(chunk)
					written.Add(int64(n))
					if err != nil {
						return
					}
				}
			})
		})
		before := managerRSS(t, s)
		issuer := newIssuer(t, "huge-directory", ca.URL+"/huge", caBundle)
		issuerCondition(t, issuer, "larger than 1048576 bytes")
		growth := managerRSS(t, s) - before
		if growth > 64<<20 {
			t.Errorf("the manager's RSS grew by %d MiB under a 1 GiB body, want < 64 MiB", growth>>20)
		}
		figure(t, "1 GiB directory: the manager read it to the cap; the server wrote %d MiB before the manager hung up; manager RSS growth %+d MiB",
			written.Load()>>20, growth>>20)
	})

	// The cases below register an account (the Issuer is Ready), then answer the new order.
	readyIssuerWith := func(t *testing.T, name string, newOrder func(ca *tenantCA, w http.ResponseWriter, r *http.Request)) *certpilotv1alpha1.Issuer {
		t.Helper()
		ca := startTenantCA(t, &caCert, func(ca *tenantCA, mux *http.ServeMux) {
			mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, r *http.Request) { newOrder(ca, w, r) })
		})
		issuer := newIssuer(t, name, ca.URL+"/dir", caBundle)
		issuerCondition(t, issuer, "is registered")
		return issuer
	}
	ownIssuer := func(issuer *certpilotv1alpha1.Issuer) certpilotv1alpha1.IssuerReference {
		return certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: issuer.Name}
	}
	t.Run("order/newOrder answering 200 with a secret is not repeated", func(t *testing.T) {
		issuer := readyIssuerWith(t, "order-200", func(_ *tenantCA, w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, tenantSecret) })
		cert := manualCertificate(t, tenant, "order-200", ownIssuer(issuer), "www.tenant.example")
		certificateSays(t, cert, "200 : OK")
	})
	t.Run("order/a problem without an ACME type keeps only the status", func(t *testing.T) {
		issuer := readyIssuerWith(t, "order-problem", func(_ *tenantCA, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"type":"about:blank","detail":%q}`, tenantSecret)
		})
		cert := manualCertificate(t, tenant, "order-problem", ownIssuer(issuer), "www.tenant.example")
		certificateSays(t, cert, "403 : Forbidden")
	})
	t.Run("order/an ACME problem's detail is cut", func(t *testing.T) {
		issuer := readyIssuerWith(t, "order-detail", func(_ *tenantCA, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"no: %s"}`, strings.Repeat("y", 200_000))
		})
		cert := manualCertificate(t, tenant, "order-detail", ownIssuer(issuer), "www.tenant.example")
		certificateSays(t, cert, "rejectedIdentifier: no: yyy")
		for _, condition := range cert.Status.Conditions {
			if len(condition.Message) > 2048 {
				t.Errorf("condition %s has a message of %d bytes", condition.Type, len(condition.Message))
			}
		}
	})
	t.Run("order/an order for another tenant's names is refused", func(t *testing.T) {
		issuer := readyIssuerWith(t, "order-names", func(ca *tenantCA, w http.ResponseWriter, _ *http.Request) {
			writeOrder(w, ca, []string{"www.tenant.example", "victim.example"}, []string{ca.URL + "/authz/1", ca.URL + "/authz/2"})
		})
		cert := manualCertificate(t, tenant, "order-names", ownIssuer(issuer), "www.tenant.example")
		certificateSays(t, cert, "not for the names asked")
	})
	t.Run("order/an order with 5000 authorizations is refused", func(t *testing.T) {
		issuer := readyIssuerWith(t, "order-authzs", func(ca *tenantCA, w http.ResponseWriter, _ *http.Request) {
			authzs := make([]string, 5000)
			for i := range authzs {
				authzs[i] = fmt.Sprintf("%s/authz/%d", ca.URL, i)
			}
			writeOrder(w, ca, []string{"www.tenant.example"}, authzs)
		})
		cert := manualCertificate(t, tenant, "order-authzs", ownIssuer(issuer), "www.tenant.example")
		certificateSays(t, cert, "5000 authorizations for 1 identifiers")
	})
	t.Run("order/an authorization on an internal service is not fetched", func(t *testing.T) {
		issuer := readyIssuerWith(t, "order-internal", func(ca *tenantCA, w http.ResponseWriter, _ *http.Request) {
			writeOrder(w, ca, []string{"www.tenant.example"}, []string{internal.URL + "/authz"})
		})
		cert := manualCertificate(t, tenant, "order-internal", ownIssuer(issuer), "www.tenant.example")
		certificateSays(t, cert, "only to the directory's scheme and host")
	})

	t.Run("order/a CA that never answers holds at most its share of the workers, each until the deadline", func(t *testing.T) {
		var inFlight, most atomic.Int64
		issuer := readyIssuerWith(t, "order-slow", func(_ *tenantCA, _ http.ResponseWriter, r *http.Request) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			// Never answers: the manager's request timeout ends the request (the server notices
			// the closed connection once the body is read).
			io.Copy(io.Discard, r.Body) //nolint:errcheck
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Minute):
			}
		})
		started := time.Now()
		var slow []*certpilotv1alpha1.Certificate
		for i := range 6 {
			slow = append(slow, manualCertificate(t, tenant, fmt.Sprintf("order-slow-%d", i), ownIssuer(issuer), fmt.Sprintf("www%d.tenant.example", i)))
		}
		testenv.Eventually(t, 30*time.Second, "the slow CA holding requests", func() error {
			if inFlight.Load() == 0 {
				return fmt.Errorf("no request in flight")
			}
			return nil
		})
		// Another tenant's Certificate, on the shared CA, is issued meanwhile.
		other := s.TLSALPN01Certificate("beside-slow", "beside-slow.example.com")
		if err := kube.Client.Create(ctx, other); err != nil {
			t.Fatal(err)
		}
		otherStarted := time.Now()
		waitAllReady(t, []*certpilotv1alpha1.Certificate{other}, 2*time.Minute)
		otherTook := time.Since(otherStarted)
		if inFlight.Load() == 0 {
			t.Logf("the slow requests ended before the other Certificate was Ready (%v)", otherTook)
		}
		// Each held request ends at the manager's request timeout (30 s), inside the reconcile's
		// deadline (acme.ReconcileDeadline), and says so in the Certificate's status.
		timedOut := func() int {
			n := 0
			for _, cert := range slow {
				if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
					continue
				}
				for _, condition := range cert.Status.Conditions {
					message := strings.ToLower(condition.Message)
					if strings.Contains(message, "timeout") || strings.Contains(message, "deadline") {
						n++
						break
					}
				}
			}
			return n
		}
		testenv.Eventually(t, time.Minute, "the held Certificates reporting the timeout", func() error {
			if n := timedOut(); n < 3 {
				return fmt.Errorf("%d of 6 report it", n)
			}
			return nil
		})
		held := time.Since(started)
		if got := most.Load(); got > 3 {
			t.Errorf("the slow CA held %d requests at once, want at most 3 of the 4 workers", got)
		}
		figure(t, "a CA that never answers, 6 Certificates, 4 workers: at most %d requests held at once; another tenant's Certificate Ready in %v meanwhile; the first held Certificates reported the timeout %v after creation (%d of 6 by then)",
			most.Load(), otherTook.Round(100*time.Millisecond), held.Round(time.Second), timedOut())
	})

	// A shared ClusterIssuer with a policy: namespaces labelled tenant=a, each only inside the
	// zones its annotation grants. The stack's namespace is tenant a (zone a.example.com), the
	// tenant namespace is tenant b.
	for namespace, labels := range map[string]map[string]string{s.Namespace: {"tenant": "a"}, tenant: {"tenant": "b"}} {
		ns := &corev1.Namespace{}
		if err := kube.Client.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(ns.DeepCopy())
		ns.Labels = labels
		if labels["tenant"] == "a" {
			ns.Annotations = map[string]string{certpilotv1alpha1.AnnotationAllowedDNSZones: "a.example.com"}
		}
		if err := kube.Client.Patch(ctx, ns, patch); err != nil {
			t.Fatal(err)
		}
	}
	shared := &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: s.Namespace + "-shared"}}
	stackIssuer := &certpilotv1alpha1.ClusterIssuer{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Name: s.Issuer}, stackIssuer); err != nil {
		t.Fatal(err)
	}
	shared.Spec = *stackIssuer.Spec.DeepCopy()
	shared.Spec.ACME.PrivateKeySecretRef.Name = s.Namespace + "-shared-account"
	shared.Spec.Policy = &certpilotv1alpha1.IssuerPolicy{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "a"}},
		NamespaceDNSZones: certpilotv1alpha1.NamespaceDNSZonesRequire,
	}
	if err := kube.Client.Create(ctx, shared); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Client.Delete(context.Background(), shared) })
	testenv.Eventually(t, time.Minute, "the shared ClusterIssuer Ready", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(shared), shared); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(shared.Status.Conditions, certpilotv1alpha1.ConditionReady) {
			return fmt.Errorf("conditions %+v", shared.Status.Conditions)
		}
		return nil
	})
	sharedRef := certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: shared.Name}
	stalledBy := func(t *testing.T, cert *certpilotv1alpha1.Certificate, reason string) {
		t.Helper()
		testenv.Eventually(t, time.Minute, "Stalled with "+reason, func() error {
			if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
				return err
			}
			stalled := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionStalled)
			if stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != reason {
				return fmt.Errorf("Stalled is %+v", stalled)
			}
			return nil
		})
	}
	before := countsAt(s.Pebble)
	t.Run("policy/a namespace the selector leaves out is refused", func(t *testing.T) {
		cert := manualCertificate(t, tenant, "policy-namespace", sharedRef, "shop.b.example.com")
		stalledBy(t, cert, policy.ReasonNamespaceNotAllowed)
	})
	t.Run("policy/another tenant's name is refused", func(t *testing.T) {
		cert := manualCertificate(t, s.Namespace, "policy-name", sharedRef, "shop.a.example.com", "shop.b.example.com")
		stalledBy(t, cert, policy.ReasonDNSNameNotAllowed)
	})
	t.Run("policy/a wildcard above the granted zone is refused", func(t *testing.T) {
		cert := manualCertificate(t, s.Namespace, "policy-wildcard", sharedRef, "*.example.com")
		stalledBy(t, cert, policy.ReasonDNSNameNotAllowed)
	})
	t.Run("policy/a name inside the granted zone is issued", func(t *testing.T) {
		cert := s.TLSALPN01Certificate("policy-granted", "shop.a.example.com")
		cert.Spec.IssuerRef = sharedRef
		if err := kube.Client.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		waitAllReady(t, []*certpilotv1alpha1.Certificate{cert}, 2*time.Minute)
		checkStored(t, []*certpilotv1alpha1.Certificate{cert})
	})
	t.Run("policy/the CA saw the granted order only", func(t *testing.T) {
		got := countsAt(s.Pebble).since(before)
		checkIssuedOnce(t, got, 1, 0)
		figure(t, "issuer policy: 3 refused Certificates, 1 granted; the CA saw %d orders and issued %d", got.orders, got.issued)
	})

	t.Run("admission/a policy on an Issuer is refused", func(t *testing.T) {
		issuer := &certpilotv1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Name: "with-policy", Namespace: tenant},
			Spec: certpilotv1alpha1.IssuerSpec{
				ACME:   certpilotv1alpha1.ACMEIssuer{Server: "https://acme.example/dir", PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "k"}},
				Policy: &certpilotv1alpha1.IssuerPolicy{},
			},
		}
		err := kube.Client.Create(ctx, issuer, client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), "spec.policy is for ClusterIssuers") {
			t.Errorf("create: %v, want refused", err)
		}
	})
	t.Run("admission/a 1.5 MiB caBundle is refused", func(t *testing.T) {
		issuer := &certpilotv1alpha1.Issuer{
			ObjectMeta: metav1.ObjectMeta{Name: "big-bundle", Namespace: tenant},
			Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
				Server: "https://acme.example/dir", PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: "k"},
				CABundle: []byte(strings.Repeat("a", 3<<19)),
			}},
		}
		err := kube.Client.Create(ctx, issuer, client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), "spec.acme.caBundle") {
			t.Errorf("create: %v, want refused", err)
		}
	})

	t.Run("cache/Secrets labelled as certpilot's stay out of the manager's memory", func(t *testing.T) {
		// A Certificate whose Secret, deleted after the tenant's Secrets are created, is
		// written again: the manager's Secret informer has then seen the tenant's Secrets too
		// (one watch, in order).
		marker := s.TLSALPN01Certificate("cache-marker", "cache-marker.example.com")
		if err := kube.Client.Create(ctx, marker); err != nil {
			t.Fatal(err)
		}
		waitAllReady(t, []*certpilotv1alpha1.Certificate{marker}, 2*time.Minute)
		const count, size = 48, 1_000_000
		before := managerHeap(t, s)
		value := []byte(strings.Repeat(tenantSecret+"\n", size/len(tenantSecret+"\n")))
		for i := range count {
			secret := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: fmt.Sprintf("labelled-%d", i),
					Labels: map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelCertificate: "order-200"}},
				Data: map[string][]byte{"config": value},
			}
			if err := kube.Client.Create(ctx, secret); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			if err := kube.Client.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(tenant),
				client.MatchingLabels{certpilotv1alpha1.LabelCertificate: "order-200"}); err != nil {
				t.Error(err)
			}
		}()
		stored := &corev1.Secret{}
		if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: marker.Namespace, Name: marker.Spec.SecretName}, stored); err != nil {
			t.Fatal(err)
		}
		if err := kube.Client.Delete(ctx, stored); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 2*time.Minute, "the marker's Secret written again", func() error {
			again := &corev1.Secret{}
			if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(stored), again); err != nil {
				return err
			}
			if again.UID == stored.UID || len(again.Data[corev1.TLSCertKey]) == 0 {
				return fmt.Errorf("not yet written again")
			}
			return nil
		})
		growth := managerHeap(t, s) - before
		if growth > 16<<20 {
			t.Errorf("the manager's heap in use grew by %d MiB with %d MiB of Secrets labelled as certpilot's, want < 16 MiB", growth>>20, count*size>>20)
		}
		figure(t, "%d tenant Secrets of %d KB labelled as certpilot's (%d MiB): the manager's heap in use %+d MiB once its informer had seen them",
			count, size/1000, count*size>>20, growth>>20)
	})
	t.Run("internal services got no connection", func(t *testing.T) {
		if n := internal.connections.Load() + internalTLS.connections.Load(); n != 0 {
			t.Errorf("the internal services got %d connections, want 0", n)
		}
	})
	t.Run("no status or Event repeats a non-ACME body", func(t *testing.T) {
		var leaks []string
		check := func(what string, value any) {
			data, _ := json.Marshal(value)
			if strings.Contains(string(data), "db_password") || strings.Contains(string(data), "hunter2") {
				leaks = append(leaks, what)
			}
		}
		scanned := 0
		for _, namespace := range []string{tenant, s.Namespace} {
			var issuers certpilotv1alpha1.IssuerList
			var certs certpilotv1alpha1.CertificateList
			var events corev1.EventList
			for _, list := range []client.ObjectList{&issuers, &certs, &events} {
				if err := kube.Client.List(ctx, list, client.InNamespace(namespace)); err != nil {
					t.Fatal(err)
				}
			}
			for _, issuer := range issuers.Items {
				check("Issuer "+issuer.Name, issuer.Status)
			}
			for _, cert := range certs.Items {
				check("Certificate "+cert.Name, cert.Status)
			}
			for _, event := range events.Items {
				check("Event "+event.Name, event.Message)
			}
			scanned += len(issuers.Items) + len(certs.Items) + len(events.Items)
		}
		if len(leaks) > 0 {
			t.Errorf("the secret appears in %v", leaks)
		}
		figure(t, "scanned %d statuses and Events: %d repeat a non-ACME body; internal services got %d connections",
			scanned, len(leaks), internal.connections.Load()+internalTLS.connections.Load())
	})
	managerHealthy(t, s)

	// What tenants share: the manager again, with a budget of 5 new orders per hour per
	// namespace and account and a hold bound of 20 s, and without the tenant's Certificates
	// above (the CA that never answers would hold its workers).
	if err := kube.Client.DeleteAllOf(ctx, &certpilotv1alpha1.Certificate{}, client.InNamespace(tenant)); err != nil {
		t.Fatal(err)
	}
	if err := s.RestartManager("--namespace-order-budget=5", "--challenge-hold=20s"); err != nil {
		t.Fatal(err)
	}
	hostileSharedCases(t, s, tenant, startTenantCA(t, &caCert, func(ca *tenantCA, mux *http.ServeMux) {
		mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, r *http.Request) {
			ca.newOrders.Add(1)
			io.Copy(io.Discard, r.Body) //nolint:errcheck
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders recently"}`)
		})
	}), caBundle, manualCertificate, certificateSays, stalledBy)
	managerHealthy(t, s)

	// Last, over the whole run: in a tenant's namespace the manager wrote only the objects of
	// certpilot's kinds and their Secrets and Events (no workload: none of them names a load
	// balancer there); outside, only the stack's own (its ClusterIssuers' account keys, their
	// status, the edge's challenge shards and Deployment).
	t.Run("writes/the manager wrote only in the namespace of each cause", func(t *testing.T) {
		tenantWrite := func(e testenv.AuditEvent) bool {
			switch e.Resource {
			case "secrets", "events", "certificates", "issuers":
				return true
			}
			return false
		}
		checkWritesStayHome(t, started, map[string]func(testenv.AuditEvent) bool{
			tenant:                 tenantWrite,
			s.Namespace + "-squat": tenantWrite,
			s.Namespace + "-other": tenantWrite,
			s.Namespace: func(e testenv.AuditEvent) bool {
				return tenantWrite(e) || (e.Resource == "deployments" && e.Name == testenv.EdgeDeployment)
			},
			s.Namespace + "-system": func(e testenv.AuditEvent) bool {
				return e.Resource == "secrets" || e.Resource == "events" || e.Resource == "leases"
			},
			"": func(e testenv.AuditEvent) bool { return e.Resource == "clusterissuers" && e.Subresource == "status" },
		})
	})
}
