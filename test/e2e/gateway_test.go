package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/controllers/source"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// dataPlane stands for a Gateway implementation's data plane: a TLS server that serves, for
// each handshake, the certificate in the Secret the Gateway's listener references, read from
// the API, as implementations do with certificateRefs. certpilot's edge sits in front of it in
// passthrough mode.
type dataPlane struct {
	Address string
	server  *http.Server
}

func startDataPlane(t *testing.T, namespace, secretName string) *dataPlane {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "served by the gateway for %s", r.Host)
		}),
		TLSConfig: &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			secret := &corev1.Secret{}
			if err := kube.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: secretName}, secret); err != nil {
				return nil, err
			}
			pair, err := tls.X509KeyPair(secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey])
			return &pair, err
		}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = server.ServeTLS(listener, "", "") }()
	t.Cleanup(func() { _ = server.Close() })
	return &dataPlane{Address: listener.Addr().String(), server: server}
}

// TestGatewayCertificateThroughEdge: an annotated Gateway's listener gets a certificate end to
// end, validated with tls-alpn-01 through certpilot's edge in passthrough mode in front of the
// Gateway's data plane, and stored in the Secret the listener references. Ordinary TLS through
// the edge reaches the data plane, which serves that certificate. Renaming the hostname reissues.
func TestGatewayCertificateThroughEdge(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	if err := testenv.InstallGatewayAPI(ctx, kube.Client); err != nil {
		t.Fatal(err)
	}
	gateways := kube.Client
	namespace := testenv.Namespace(t, "e2e-gateway")
	const secretName = "web-tls"
	plane := startDataPlane(t, namespace, secretName)

	s := testenv.StartTestStack(t, kube, namespace, testenv.PebbleOptions{NonceRejectPercent: 5}, testenv.StackOptions{
		Namespace: namespace,
		// The edge owns the TLS port: it answers acme-tls/1 itself and splices every other
		// connection to the Gateway's data plane.
		EdgeArgs: []string{"--mode", "passthrough", "--upstream", plane.Address},
	})
	pebble := s.Pebble

	solver, err := json.Marshal(certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{
		LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: testenv.EdgeDeployment},
		ProbeAddress: fmt.Sprintf("127.0.0.1:%d", pebble.TLSPort),
	}})
	if err != nil {
		t.Fatal(err)
	}
	hostname := gatewayv1.Hostname("www.gateway.test")
	gateway := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: namespace, Annotations: map[string]string{
			source.AnnotationClusterIssuer: s.Issuer,
			source.AnnotationSolver:        string(solver),
		}},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "any-implementation",
			Listeners: []gatewayv1.Listener{{
				Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: &hostname,
				TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: secretName}}},
			}},
		},
	}
	if err := gateways.Create(ctx, gateway); err != nil {
		t.Fatal(err)
	}

	cert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: secretName}}
	started := time.Now()
	testenv.Eventually(t, 30*time.Second, "generated Certificate", func() error {
		return kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert)
	})
	if owner := metav1.GetControllerOf(cert); owner == nil || owner.Kind != "Gateway" || owner.UID != gateway.UID {
		t.Errorf("Certificate controller %+v, want the Gateway", owner)
	}
	waitReady(t, cert, 2*time.Minute, "")
	t.Logf("issued in %s", time.Since(started).Round(time.Millisecond))
	if cert.Spec.SecretName != secretName {
		t.Errorf("secretName %s, want the listener's certificateRef %s", cert.Spec.SecretName, secretName)
	}
	if len(cert.Status.Order.Challenges) != 1 || cert.Status.Order.Challenges[0].Type != "tls-alpn-01" {
		t.Errorf("challenges %+v, want one tls-alpn-01", cert.Status.Order.Challenges)
	}
	leaf, _ := verifySecret(t, pebble, cert)
	first := fmt.Sprintf("%x", leaf.SerialNumber)

	// Ordinary TLS to the edge's port reaches the Gateway's data plane, which serves the
	// certificate from the listener's Secret.
	assertServedThroughEdge(t, pebble, "www.gateway.test", first)

	// Renaming the listener's hostname updates the Certificate and a new certificate follows.
	testenv.Eventually(t, 10*time.Second, "rename the hostname", func() error {
		if err := gateways.Get(ctx, client.ObjectKeyFromObject(gateway), gateway); err != nil {
			return err
		}
		renamed := gatewayv1.Hostname("app.gateway.test")
		gateway.Spec.Listeners[0].Hostname = &renamed
		return gateways.Update(ctx, gateway)
	})
	testenv.Eventually(t, 30*time.Second, "dnsNames follow the listener", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if len(cert.Spec.DNSNames) != 1 || cert.Spec.DNSNames[0] != "app.gateway.test" {
			return fmt.Errorf("dnsNames %v", cert.Spec.DNSNames)
		}
		return nil
	})
	waitReady(t, cert, 2*time.Minute, first)
	leaf, _ = verifySecret(t, pebble, cert)
	assertServedThroughEdge(t, pebble, "app.gateway.test", fmt.Sprintf("%x", leaf.SerialNumber))
}

// assertServedThroughEdge connects to the edge's TLS port with SNI name (no acme-tls/1) and
// checks that the data plane behind it answers with the certificate of that serial, trusted
// through Pebble's root.
func assertServedThroughEdge(t *testing.T, pebble *testenv.Pebble, name, serial string) {
	t.Helper()
	roots, err := pebble.Roots()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	edgeAddress := fmt.Sprintf("127.0.0.1:%d", pebble.TLSPort)
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, edgeAddress)
		},
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name},
	}}
	defer httpClient.CloseIdleConnections()
	response, err := httpClient.Get("https://" + name + "/")
	if err != nil {
		t.Fatalf("GET https://%s/ through the edge: %v", name, err)
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	if !strings.Contains(string(body), "served by the gateway for "+name) {
		t.Errorf("body %q, want the data plane's answer", body)
	}
	if got := fmt.Sprintf("%x", response.TLS.PeerCertificates[0].SerialNumber); got != serial {
		t.Errorf("served serial %s, want %s", got, serial)
	}
	if !pki.DNSNamesEqual(response.TLS.PeerCertificates[0], []string{name}) {
		t.Errorf("served names %v, want %s", response.TLS.PeerCertificates[0].DNSNames, name)
	}
}

// TestGatewaySourceTurnsOnWhenCRDsAppear: without the Gateway API CRDs the manager starts and
// says once that the Gateway source is off; installing them turns it on without a restart.
func TestGatewaySourceTurnsOnWhenCRDsAppear(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	if err := testenv.UninstallGatewayAPI(ctx, kube.Client); err != nil {
		t.Fatal(err)
	}
	// Leave them installed for the tests after this one, as TestMain found them or not.
	t.Cleanup(func() { _ = testenv.InstallGatewayAPI(context.Background(), kube.Client) })

	managerBinary, _ := testenv.Binaries(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := testenv.InstallManagerRBAC(ctx, kube.Client, ""); err != nil {
		t.Fatal(err)
	}
	managerConfig, err := testenv.ManagerConfig(kube, kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.WriteKubeconfig(managerConfig, kubeconfig); err != nil {
		t.Fatal(err)
	}
	manager, err := testenv.StartProcess("manager", managerBinary, []string{
		"--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		manager.Stop(20 * time.Second)
		if t.Failed() {
			t.Logf("manager output:\n%s", manager.Output())
		}
	})
	const off = "The Gateway API CRDs are not installed: the Gateway source is off until they are"
	testenv.Eventually(t, time.Minute, "the manager says the Gateway source is off", func() error {
		if exited, err := manager.Exited(); exited {
			return fmt.Errorf("the manager exited: %v", err)
		}
		if !strings.Contains(manager.Output(), off) {
			return fmt.Errorf("not yet")
		}
		return nil
	})

	if err := testenv.InstallGatewayAPI(ctx, kube.Client); err != nil {
		t.Fatal(err)
	}
	gateways := kube.Client
	namespace := testenv.Namespace(t, "e2e-gateway-crds")
	if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	hostname := gatewayv1.Hostname("www.crds.test")
	gateway := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: namespace, Annotations: map[string]string{source.AnnotationIssuer: "any"}},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "any", Listeners: []gatewayv1.Listener{{
			Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: &hostname,
			TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "www-tls"}}},
		}}},
	}
	// The CRDs are established, but the apiserver may take a moment to serve the kind.
	testenv.Eventually(t, 30*time.Second, "create the Gateway", func() error { return gateways.Create(ctx, gateway) })
	testenv.Eventually(t, time.Minute, "the Certificate generated without a restart", func() error {
		return kube.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "www-tls"}, &certpilotv1alpha1.Certificate{})
	})
	output := manager.Output()
	if n := strings.Count(output, off); n != 1 {
		t.Errorf("the manager said %d times that the Gateway source is off, want once", n)
	}
	if !strings.Contains(output, "The Gateway API CRDs were installed: the Gateway source is on") {
		t.Errorf("the manager did not say the Gateway source turned on")
	}
	// The ListenerSet CRD is not among those installed here: the ListenerSet source stays off,
	// said once, and the Gateway source works regardless.
	if n := strings.Count(output, "The ListenerSet CRD is not installed: ListenerSets are not read until it is"); n != 1 {
		t.Errorf("the manager said %d times that the ListenerSet source is off, want once", n)
	}
}

// TestListenerSetCertificateThroughEdge: a ListenerSet in a team's namespace, attached to a
// Gateway annotated with a ClusterIssuer, gets a certificate end to end for its listener: the
// issuer inherited from the Gateway, validated with tls-alpn-01 through the edge, stored in the
// Secret the listener references in the ListenerSet's namespace and served by the data plane.
func TestListenerSetCertificateThroughEdge(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	if err := testenv.InstallGatewayAPI(ctx, kube.Client); err != nil {
		t.Fatal(err)
	}
	if err := testenv.InstallListenerSet(ctx, kube.Client); err != nil {
		t.Fatal(err)
	}
	namespace := testenv.Namespace(t, "e2e-listenerset")
	const secretName = "shop-tls"
	plane := startDataPlane(t, namespace, secretName)
	s := testenv.StartTestStack(t, kube, namespace, testenv.PebbleOptions{NonceRejectPercent: 5}, testenv.StackOptions{
		Namespace: namespace,
		EdgeArgs:  []string{"--mode", "passthrough", "--upstream", plane.Address},
	})
	solver, err := json.Marshal(certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{
		LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: testenv.EdgeDeployment},
		ProbeAddress: fmt.Sprintf("127.0.0.1:%d", s.Pebble.TLSPort),
	}})
	if err != nil {
		t.Fatal(err)
	}
	// The platform's Gateway, in its own namespace, names the ClusterIssuer and admits
	// ListenerSets; it has no TLS listener of its own.
	infra := testenv.Namespace(t, "e2e-listenerset-infra")
	if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: infra}}); err != nil {
		t.Fatal(err)
	}
	gateway := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "shared", Namespace: infra, Annotations: map[string]string{source.AnnotationClusterIssuer: s.Issuer}},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "any-implementation",
			AllowedListeners: &gatewayv1.AllowedListeners{Namespaces: &gatewayv1.ListenerNamespaces{From: ptr.To(gatewayv1.NamespacesFromAll)}},
			Listeners:        []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}},
		},
	}
	if err := kube.Client.Create(ctx, gateway); err != nil {
		t.Fatal(err)
	}
	hostname := gatewayv1.Hostname("shop.listenerset.test")
	listenerSet := &gatewayv1.ListenerSet{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: namespace, Annotations: map[string]string{source.AnnotationSolver: string(solver)}},
		Spec: gatewayv1.ListenerSetSpec{
			ParentRef: gatewayv1.ParentGatewayReference{Name: "shared", Namespace: ptr.To(gatewayv1.Namespace(infra))},
			Listeners: []gatewayv1.ListenerEntry{{
				Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: &hostname,
				TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: secretName}}},
			}},
		},
	}
	// The CRD is established, but the apiserver may take a moment to serve the kind.
	testenv.Eventually(t, 30*time.Second, "create the ListenerSet", func() error { return kube.Client.Create(ctx, listenerSet) })

	cert := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: secretName}}
	testenv.Eventually(t, time.Minute, "generated Certificate", func() error {
		return kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert)
	})
	if owner := metav1.GetControllerOf(cert); owner == nil || owner.Kind != "ListenerSet" || owner.UID != listenerSet.UID {
		t.Errorf("Certificate controller %+v, want the ListenerSet", owner)
	}
	if cert.Spec.IssuerRef != (certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: s.Issuer}) {
		t.Errorf("issuerRef %+v, want the Gateway's ClusterIssuer %s", cert.Spec.IssuerRef, s.Issuer)
	}
	waitReady(t, cert, 2*time.Minute, "")
	if len(cert.Status.Order.Challenges) != 1 || cert.Status.Order.Challenges[0].Type != "tls-alpn-01" {
		t.Errorf("challenges %+v, want one tls-alpn-01", cert.Status.Order.Challenges)
	}
	leaf, _ := verifySecret(t, s.Pebble, cert)
	assertServedThroughEdge(t, s.Pebble, string(hostname), fmt.Sprintf("%x", leaf.SerialNumber))
}
