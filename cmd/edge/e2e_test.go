package main_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/edge"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// publishChallenge adds one response to the challenge Secret, as the controller does (see
// docs/load-balancer-contract.md): create it, or merge the key into it.
func publishChallenge(ctx context.Context, namespace, key string, value []byte) error {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Namespace: namespace, Name: v1alpha1.ChallengeSecretName("edge"),
		Labels: map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelChallenges: "true"},
	}, Data: map[string][]byte{key: value}}
	err := kube.Client.Create(ctx, secret)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	patch := client.RawPatch("application/merge-patch+json",
		fmt.Appendf(nil, `{"stringData":{%q:%q}}`, key, value))
	return kube.Client.Patch(ctx, secret, patch)
}

// issueThroughEdge orders a certificate for names from Pebble, publishes each response in the
// challenge Secret that the edge watches (tls-alpn-01, or http-01 for the names in http01),
// and returns the certificate and key as a kubernetes.io/tls Secret's data.
func issueThroughEdge(t *testing.T, ctx context.Context, acmeClient *acme.Client, namespace string, names []string, http01 map[string]bool) map[string][]byte {
	t.Helper()
	order, err := acmeClient.NewOrder(ctx, names, "")
	if err != nil {
		t.Fatalf("NewOrder: %v", err)
	}
	for _, authzURL := range order.AuthzURLs {
		authz, err := acmeClient.GetAuthorization(ctx, authzURL)
		if err != nil {
			t.Fatal(err)
		}
		challengeType := "tls-alpn-01"
		if http01[authz.Identifier] {
			challengeType = "http-01"
		}
		challenge, ok := authz.Challenge(challengeType)
		if !ok {
			t.Fatalf("%s: no %s challenge", authz.Identifier, challengeType)
		}
		switch challengeType {
		case "tls-alpn-01":
			certificate, err := acmeClient.TLSALPN01Certificate(challenge.Token, authz.Identifier)
			if err != nil {
				t.Fatal(err)
			}
			err = publishChallenge(ctx, namespace, v1alpha1.TLSALPN01Key(authz.Identifier), edgetest.CertificatePEM(t, &certificate))
			if err != nil {
				t.Fatal(err)
			}
		case "http-01":
			keyAuthorization, err := acmeClient.KeyAuthorization(challenge.Token)
			if err != nil {
				t.Fatal(err)
			}
			if err := publishChallenge(ctx, namespace, v1alpha1.HTTP01Key(challenge.Token), []byte(keyAuthorization)); err != nil {
				t.Fatal(err)
			}
		}
		// The edge reloads the Secret within moments; what the controller's self-check would
		// wait for, this waits for too, by asking the edge the way the CA will.
		keyAuthorization, err := acmeClient.KeyAuthorization(challenge.Token)
		if err != nil {
			t.Fatal(err)
		}
		edgetest.Eventually(t, 10*time.Second, func() error {
			if challengeType == "http-01" {
				return checkHTTP01(ctx, challenge.Token, keyAuthorization)
			}
			return edgetest.ValidateChallenge(ctx, edgeTLSAddress, authz.Identifier, keyAuthorization)
		})
		if err := acmeClient.Accept(ctx, challenge.URL); err != nil {
			t.Fatalf("Accept: %v", err)
		}
	}
	order = waitOrder(t, ctx, acmeClient, order, acme.StatusReady)
	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, names)
	if err != nil {
		t.Fatal(err)
	}
	if order, err = acmeClient.Finalize(ctx, order, csr); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	order = waitOrder(t, ctx, acmeClient, order, acme.StatusValid)
	chain, err := acmeClient.FetchCertificate(ctx, order.CertURL)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"tls.crt": pki.EncodeChain(chain), "tls.key": keyPEM}
}

func waitOrder(t *testing.T, ctx context.Context, acmeClient *acme.Client, order *acme.Order, want string) *acme.Order {
	t.Helper()
	for order.Status != want {
		switch order.Status {
		case acme.StatusPending, acme.StatusProcessing, acme.StatusReady:
		default:
			t.Fatalf("order is %s (%v), want %s", order.Status, order.Error, want)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("order still %s: %v", order.Status, ctx.Err())
		case <-time.After(order.RetryAfter):
		}
		var err error
		if order, err = acmeClient.GetOrder(ctx, order.URL); err != nil {
			t.Fatal(err)
		}
	}
	return order
}

// edgeTLSAddress and edgeHTTPAddress are where the edge under test listens: Pebble's
// tls-alpn-01 and http-01 ports.
var edgeTLSAddress, edgeHTTPAddress string

// checkHTTP01 asks the edge for token's key authorization, as Pebble will.
func checkHTTP01(ctx context.Context, token, keyAuthorization string) error {
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+edgeHTTPAddress+edge.HTTP01PathPrefix+token, nil)
	if err != nil {
		return err
	}
	response, err := (&http.Client{Timeout: 5 * time.Second}).Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	if response.StatusCode != http.StatusOK || string(body) != keyAuthorization {
		return fmt.Errorf("http-01 answered %d", response.StatusCode)
	}
	return nil
}

// startEdgeForPebble runs the edge binary on Pebble's validation ports with args and waits
// until it is ready.
func startEdgeForPebble(t *testing.T, pebble *testenv.Pebble, namespace string, args ...string) *process {
	t.Helper()
	edgeTLSAddress = net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.TLSPort))
	edgeHTTPAddress = net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.HTTPPort))
	healthAddress := testenv.FreeAddress(t)
	edgeProcess := start(t, buildEdge(t), append([]string{
		"--kubeconfig", writeKubeconfig(t, kube.Config),
		"--namespace", namespace,
		"--challenge-secret", v1alpha1.ChallengeSecretName("edge"),
		"--https-bind-address", edgeTLSAddress,
		"--http-bind-address", edgeHTTPAddress,
		"--health-bind-address", healthAddress,
	}, args...)...)
	waitReady(t, edgeProcess, healthAddress)
	return edgeProcess
}

func waitReady(t *testing.T, edgeProcess *process, healthAddress string) {
	t.Helper()
	httpClient := &http.Client{Timeout: 5 * time.Second}
	edgetest.Eventually(t, time.Minute, func() error {
		select {
		case <-edgeProcess.exited:
			t.Fatalf("edge exited early: %v\n%s", edgeProcess.err, edgeProcess.output(t))
		default:
		}
		response, err := httpClient.Get("http://" + healthAddress + "/readyz")
		if err != nil {
			return err
		}
		response.Body.Close()
		if response.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", response.StatusCode)
		}
		return nil
	})
}

func stopEdge(t *testing.T, edgeProcess *process) {
	t.Helper()
	if err := edgeProcess.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := edgeProcess.wait(t, 30*time.Second); code != 0 {
		t.Errorf("edge exited with %d after SIGTERM", code)
	}
}

// TestPebbleThroughEdge: Pebble validates tls-alpn-01 (and http-01) through the edge binary in
// passthrough mode, in front of a plain TLS upstream that ordinary clients still reach
// unchanged, and in terminate mode, which then serves the issued certificate from its Secret
// and proxies to an HTTP upstream.
func TestPebbleThroughEdge(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pebble := testenv.StartPebble(t, testenv.PebbleOptions{})
	buildEdge(t)

	accountKey, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	acmeClient, err := acme.New(ctx, acme.Options{
		DirectoryURL: pebble.DirectoryURL(), AccountKey: accountKey, CABundle: pebble.CABundle, UserAgent: "certpilot-edge-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acmeClient.Register(ctx, "ops@example.test", nil); err != nil {
		t.Fatal(err)
	}

	t.Run("passthrough", func(t *testing.T) {
		namespace := createNamespace(t, ctx, "edge-pebble-passthrough")
		upstreamCertificate := edgetest.SelfSignedCertificate(t, "pt.example.test")
		upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "upstream")
		}))
		upstream.TLS = &tls.Config{Certificates: []tls.Certificate{*upstreamCertificate}}
		upstream.StartTLS()
		defer upstream.Close()

		edgeProcess := startEdgeForPebble(t, pebble, namespace, "--mode", "passthrough", "--upstream", upstream.Listener.Addr().String())
		issueThroughEdge(t, ctx, acmeClient, namespace, []string{"pt.example.test"}, nil)

		// An ordinary client reaches the upstream, end to end encrypted with its key.
		roots := x509.NewCertPool()
		roots.AddCert(upstreamCertificate.Leaf)
		body, err := getThrough(ctx, edgeTLSAddress, "https://pt.example.test/", roots)
		if err != nil || body != "upstream" {
			t.Errorf("ordinary request through the edge: %q, %v", body, err)
		}
		stopEdge(t, edgeProcess)
	})

	t.Run("terminate", func(t *testing.T) {
		namespace := createNamespace(t, ctx, "edge-pebble-terminate")
		upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = fmt.Fprintf(w, "upstream %s %s", r.Host, r.Header.Get("X-Forwarded-Proto"))
		}))
		defer upstream.Close()

		edgeProcess := startEdgeForPebble(t, pebble, namespace, "--mode", "terminate", "--upstream", upstream.URL,
			"--certificate-namespaces", namespace)
		names := []string{"www.example.test", "example.test"}
		data := issueThroughEdge(t, ctx, acmeClient, namespace, names, map[string]bool{"example.test": true})

		// Stored the way certpilot stores it, the certificate is served at once.
		edgetest.IssuedData(ctx, t, kube.Client, namespace, "www", data, names...)
		rootsPEM, err := pebble.Roots()
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(rootsPEM)
		edgetest.Eventually(t, 10*time.Second, func() error {
			for _, name := range names {
				body, err := getThrough(ctx, edgeTLSAddress, "https://"+name+"/", roots)
				if err != nil {
					return err
				}
				if want := "upstream " + name + " https"; body != want {
					return fmt.Errorf("got %q, want %q", body, want)
				}
			}
			return nil
		})
		stopEdge(t, edgeProcess)
	})
}

// insecureTransport connects every name to address and verifies no certificate.
func insecureTransport(address string) *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, address)
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}
}

// getThrough GETs url over a connection to address, verifying the server against roots.
func getThrough(ctx context.Context, address, url string, roots *x509.CertPool) (string, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, address)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}}
	defer httpClient.CloseIdleConnections()
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	response, err := httpClient.Do(request)
	if err != nil {
		return "", err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	return string(body), err
}

// createNamespace creates a namespace with a generated name (envtest never deletes them).
func createNamespace(t *testing.T, ctx context.Context, prefix string) string {
	t.Helper()
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := kube.Client.Create(ctx, namespace); err != nil {
		t.Fatal(err)
	}
	return namespace.Name
}
