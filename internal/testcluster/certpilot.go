package testcluster

import (
	"context"
	"fmt"
	"net"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// Client is a controller-runtime client of the cluster as its administrator, with certpilot's
// types.
func (c *Cluster) Client() (client.Client, error) {
	return client.New(c.Config, client.Options{Scheme: testenv.NewScheme()})
}

// ServiceIP returns the ClusterIP of a Service.
func ServiceIP(ctx context.Context, k client.Client, namespace, name string) (string, error) {
	var svc corev1.Service
	if err := k.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &svc); err != nil {
		return "", err
	}
	if net.ParseIP(svc.Spec.ClusterIP) == nil {
		return "", fmt.Errorf("service %s/%s has no ClusterIP", namespace, name)
	}
	return svc.Spec.ClusterIP, nil
}

// StartPebble runs Pebble where pods reach it (the bridge's address) and validates against
// answerIP: challtestsrv resolves every name to it, and Pebble's validation authority connects
// to port 443 (tls-alpn-01) and 80 (http-01) there, the ports of the edge's Service. ctx bounds
// the start; Stop the Pebble when done.
func (c *Cluster) StartPebble(ctx context.Context, answerIP string) (*testenv.Pebble, error) {
	return c.startPebble(ctx, testenv.PebbleOptions{DefaultIPv4: answerIP})
}

// StartPebbleWithDNS is StartPebble with the validation authority resolving names at
// dnsServer (host:port, a BIND of StartBIND) instead of challtestsrv.
func (c *Cluster) StartPebbleWithDNS(ctx context.Context, dnsServer string) (*testenv.Pebble, error) {
	return c.startPebble(ctx, testenv.PebbleOptions{DNSServer: dnsServer})
}

func (c *Cluster) startPebble(ctx context.Context, opts testenv.PebbleOptions) (*testenv.Pebble, error) {
	dir, err := os.MkdirTemp(c.Dir, "pebble-")
	if err != nil {
		return nil, err
	}
	opts.ListenHost, opts.TLSPort, opts.HTTPPort, opts.Dir = BridgeIP, 443, 80, dir
	return testenv.RunPebble(ctx, opts)
}

// pebbleACME is the ACME part of a ClusterIssuer of Pebble: its directory, its CA, and the
// account key in the Secret "<name>-account".
func pebbleACME(name string, pebble *testenv.Pebble) certpilotv1alpha1.ACMEIssuer {
	return certpilotv1alpha1.ACMEIssuer{
		Server:              pebble.DirectoryURL(),
		CABundle:            pebble.CABundle,
		PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: name + "-account"},
	}
}

// PebbleClusterIssuer is a ClusterIssuer of Pebble that answers tls-alpn-01 through the load
// balancer Deployment namespace/name; the self-check dials probeAddress (the Service, as pods
// resolve no names here).
func PebbleClusterIssuer(name string, pebble *testenv.Pebble, namespace, loadBalancer, probeAddress string) *certpilotv1alpha1.ClusterIssuer {
	return &certpilotv1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: certpilotv1alpha1.IssuerSpec{
			ACME: pebbleACME(name, pebble),
			Solver: &certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{
				LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: loadBalancer, Namespace: namespace},
				ProbeAddress: probeAddress,
			}},
		},
	}
}

// BINDClusterIssuer is a ClusterIssuer of Pebble that answers dns-01 with TSIG-signed updates
// to bind, the TSIG secret in the Secret tsigSecret (key "secret") of the cluster resource
// namespace; the self-check asks bind itself.
func BINDClusterIssuer(name string, pebble *testenv.Pebble, bind *BIND, tsigSecret string) *certpilotv1alpha1.ClusterIssuer {
	return &certpilotv1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: certpilotv1alpha1.IssuerSpec{
			ACME: pebbleACME(name, pebble),
			Solver: &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
				RFC2136: &certpilotv1alpha1.RFC2136DNS01{
					Nameserver: bind.Address, TSIGKeyName: bind.TSIGKeyName, TSIGAlgorithm: bind.TSIGAlgorithm,
					TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: tsigSecret, Key: "secret"},
				},
				Nameservers: []string{bind.Address},
			}},
		},
	}
}
