package cluster

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testcluster"
)

// issueByDNS01 issues a certificate for a wildcard by dns-01 from inside the cluster: the
// manager pod sends TSIG-signed RFC 2136 updates to BIND on the bridge address and asks it for
// the TXT record, and Pebble resolves the name through the same BIND.
func issueByDNS01(t *testing.T, ctx context.Context, k client.Client) {
	edgeIP, err := testcluster.ServiceIP(ctx, k, namespace, edgeName)
	if err != nil {
		t.Fatal(err)
	}
	bind, err := cluster.StartBIND(ctx, edgeIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bind.Stop)
	pebble, err := cluster.StartPebbleWithDNS(ctx, bind.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pebble.Stop)
	// A ClusterIssuer's TSIG Secret is in the cluster resource namespace, the release's.
	tsig := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pebble-dns01-tsig", Namespace: namespace},
		Data:       map[string][]byte{"secret": []byte(bind.TSIGSecret)},
	}
	issuer := testcluster.BINDClusterIssuer("pebble-dns01", pebble, bind, tsig.Name)
	for _, obj := range []client.Object{tsig, issuer} {
		if err := k.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteAndWait(t, k, obj) })
	}
	dns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dns01"}}
	if err := k.Create(ctx, dns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAndWait(t, k, dns) })

	const name = "*.dns01.cluster.test"
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "wildcard", Namespace: dns.Name},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{name},
			SecretName: "wildcard-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: issuer.Name},
		},
	}
	created := time.Now()
	if err := k.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ctx, k, cert)
	t.Logf("FIGURE Certificate Ready by dns-01 through BIND on the bridge: %s", time.Since(created).Round(100*time.Millisecond))

	leaf := storedLeaf(t, ctx, k, dns.Name, cert.Spec.SecretName)
	if err := leaf.VerifyHostname("www.dns01.cluster.test"); err != nil {
		t.Fatal(err)
	}
}
