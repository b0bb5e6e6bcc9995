package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
	"github.com/certpilot/certpilot/internal/pki"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestIPAddressCertificates: Certificates for IPv4 and IPv6 loopback (spec.ipAddresses, RFC
// 8738) are ordered as ip identifiers and validated by Pebble through the edge, by tls-alpn-01
// (Pebble sends the reverse-DNS name as SNI, the edge answers with a challenge certificate
// naming the address) and by http-01 (Pebble connects to the address itself), one edge replica
// on 127.0.0.1 and one on [::1]. The issued certificates name the addresses as iPAddress names
// and have no common name; the edge serves them to clients that connect to the address and
// send no SNI.
func TestIPAddressCertificates(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := testenv.Namespace(t, "e2e-ip")
	s := startStackOptions(t, "e2e-ip", testenv.PebbleOptions{NonceRejectPercent: 5}, testenv.StackOptions{
		Namespace: namespace,
		EdgeArgs:  []string{"--certificate-namespaces", namespace},
		EdgeIPv6:  true,
	})
	ips := []string{"127.0.0.1", "::1"}
	address := func(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

	for challengeType, name := range map[string]string{"tls-alpn-01": "ip-alpn", "http-01": "ip-http"} {
		t.Run(challengeType, func(t *testing.T) {
			// One solver per address, each self-checking the edge replica on that address.
			port := s.Pebble.TLSPort
			solverFor := func(ip string) v1alpha1.Solver {
				return v1alpha1.Solver{TLSALPN01: &v1alpha1.TLSALPN01Solver{
					LoadBalancer: v1alpha1.LoadBalancerRef{Name: testenv.EdgeDeployment}, ProbeAddress: address(ip, port)}}
			}
			if challengeType == "http-01" {
				port = s.Pebble.HTTPPort
				solverFor = func(ip string) v1alpha1.Solver {
					return v1alpha1.Solver{HTTP01: &v1alpha1.HTTP01Solver{
						LoadBalancer: v1alpha1.LoadBalancerRef{Name: testenv.EdgeDeployment}, ProbeAddress: address(ip, port)}}
				}
			}
			cert := s.TLSALPN01Certificate(name)
			cert.Spec.DNSNames, cert.Spec.IPAddresses = nil, ips
			v4 := solverFor("127.0.0.1")
			cert.Spec.Solver = &v4
			cert.Spec.Solvers = []v1alpha1.NamedSolver{{IPAddresses: []string{"::1"}, Solver: solverFor("::1")}}
			if err := kube.Client.Create(ctx, cert); err != nil {
				t.Fatal(err)
			}
			waitReady(t, cert, 2*time.Minute, "")

			leaf, _ := verifySecret(t, s.Pebble, cert)
			if leaf.Subject.CommonName != "" {
				t.Errorf("common name %q, want none for IP addresses", leaf.Subject.CommonName)
			}
			if len(leaf.DNSNames) != 0 || !pki.NamesEqual(leaf, ips) {
				t.Errorf("certificate names %v %v, want the iPAddress names %v only", leaf.DNSNames, leaf.IPAddresses, ips)
			}
			if order := cert.Status.Order; !slices.Equal(order.IPAddresses, ips) || len(order.DNSNames) != 0 {
				t.Errorf("status order names %v, IP addresses %v, want IP addresses %v", order.DNSNames, order.IPAddresses, ips)
			}
			var validated []string
			for _, challenge := range cert.Status.Order.Challenges {
				if challenge.Type != challengeType || challenge.State != "valid" || challenge.DNSName != "" {
					t.Errorf("challenge %+v, want a valid %s for an IP address", challenge, challengeType)
				}
				validated = append(validated, challenge.IPAddress)
			}
			if slices.Sort(validated); !slices.Equal(validated, []string{"127.0.0.1", "::1"}) {
				t.Errorf("challenges for %v, want one per address", validated)
			}
			waitNoChallengeResponses(t, s)

			// A client of https://<address>/ sends no SNI; each replica serves the certificate
			// for the address the connection arrived at (verifySecret checked its chain).
			for _, ip := range ips {
				testenv.Eventually(t, 30*time.Second, "the certificate served at "+ip, func() error {
					served, err := edgetest.ServedLeaf(ctx, address(ip, s.Pebble.TLSPort), "")
					if err != nil {
						return err
					}
					if serial := fmt.Sprintf("%x", served.SerialNumber); serial != cert.Status.SerialNumber {
						return fmt.Errorf("served serial %s, want %s", serial, cert.Status.SerialNumber)
					}
					return served.VerifyHostname(ip)
				})
			}
			if err := kube.Client.Delete(ctx, cert); err != nil {
				t.Fatal(err)
			}
		})
	}
}
