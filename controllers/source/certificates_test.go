package source

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// listener is an HTTPS listener in Terminate mode (the default) with one Secret reference.
func listener(name, hostname, secret string) gatewayv1.Listener {
	l := gatewayv1.Listener{
		Name: gatewayv1.SectionName(name), Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
		TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(secret)}}},
	}
	if hostname != "" {
		h := gatewayv1.Hostname(hostname)
		l.Hostname = &h
	}
	return l
}

func TestGatewayTLSEntries(t *testing.T) {
	passthrough := listener("pass", "pass.example.com", "pass-tls")
	passthrough.Protocol = gatewayv1.TLSProtocolType
	passthrough.TLS.Mode = ptrTo(gatewayv1.TLSModePassthrough)
	terminateTLS := listener("tls", "tls.example.com", "tls-tls")
	terminateTLS.Protocol = gatewayv1.TLSProtocolType
	terminateTLS.TLS.Mode = ptrTo(gatewayv1.TLSModeTerminate)
	http := gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptrTo(gatewayv1.Hostname("a.example.com"))}
	noRefs := listener("norefs", "norefs.example.com", "x")
	noRefs.TLS.CertificateRefs = nil
	otherNamespace := listener("other", "other.example.com", "x")
	otherNamespace.TLS.CertificateRefs[0].Namespace = ptrTo(gatewayv1.Namespace("elsewhere"))
	sameNamespace := listener("same", "same.example.com", "same-tls")
	sameNamespace.TLS.CertificateRefs[0].Namespace = ptrTo(gatewayv1.Namespace("web"))
	configMap := listener("cm", "cm.example.com", "x")
	configMap.TLS.CertificateRefs[0].Kind = ptrTo(gatewayv1.Kind("ConfigMap"))

	for name, tc := range map[string]struct {
		listeners    []gatewayv1.Listener
		want         []tlsEntry
		wantProblems []string
	}{
		"https listeners": {
			listeners: []gatewayv1.Listener{listener("a", "a.example.com", "shared"), listener("b", "b.example.com", "b-tls")},
			want: []tlsEntry{
				{From: `listener "a"`, SecretName: "shared", Hosts: []string{"a.example.com"}},
				{From: `listener "b"`, SecretName: "b-tls", Hosts: []string{"b.example.com"}},
			},
		},
		"TLS terminate counts, passthrough and HTTP do not": {
			listeners: []gatewayv1.Listener{passthrough, terminateTLS, http},
			want:      []tlsEntry{{From: `listener "tls"`, SecretName: "tls-tls", Hosts: []string{"tls.example.com"}}},
		},
		"no hostname is skipped silently": {listeners: []gatewayv1.Listener{listener("any", "", "any-tls")}},
		"explicit same namespace": {
			listeners: []gatewayv1.Listener{sameNamespace},
			want:      []tlsEntry{{From: `listener "same"`, SecretName: "same-tls", Hosts: []string{"same.example.com"}}},
		},
		"refused references": {
			listeners:    []gatewayv1.Listener{noRefs, otherNamespace, configMap},
			wantProblems: []string{reasonNoSecretName, reasonUnsupportedRef, reasonUnsupportedRef},
		},
	} {
		t.Run(name, func(t *testing.T) {
			gateway := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "web"},
				Spec: gatewayv1.GatewaySpec{Listeners: tc.listeners}}
			got, problems := gatewayTLSEntries(gateway)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("entries = %+v, want %+v", got, tc.want)
			}
			if reasons := problemReasons(problems); !reflect.DeepEqual(reasons, tc.wantProblems) {
				t.Errorf("problems = %+v, want reasons %v", problems, tc.wantProblems)
			}
		})
	}
}

func TestIngressTLSEntries(t *testing.T) {
	ingress := &networkingv1.Ingress{Spec: networkingv1.IngressSpec{TLS: []networkingv1.IngressTLS{
		{Hosts: []string{"a.example.com", "b.example.com"}, SecretName: "ab-tls"},
		{Hosts: []string{"c.example.com"}},
		{SecretName: "empty-tls"},
		{Hosts: []string{"d.example.com"}, SecretName: "d-tls"},
	}}}
	got, problems := ingressTLSEntries(ingress)
	want := []tlsEntry{
		{From: "spec.tls[0]", SecretName: "ab-tls", Hosts: []string{"a.example.com", "b.example.com"}},
		{From: "spec.tls[3]", SecretName: "d-tls", Hosts: []string{"d.example.com"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries = %+v, want %+v", got, want)
	}
	if reasons := problemReasons(problems); !reflect.DeepEqual(reasons, []string{reasonNoSecretName, reasonNoHosts}) {
		t.Errorf("problems = %+v", problems)
	}
}

func TestGroupBySecret(t *testing.T) {
	got := groupBySecret([]tlsEntry{
		{From: "a", SecretName: "shared", Hosts: []string{"A.example.com"}},
		{From: "b", SecretName: "own", Hosts: []string{"b.example.com"}},
		{From: "c", SecretName: "shared", Hosts: []string{"c.example.com", "a.example.com."}},
	})
	want := []tlsBlock{
		{SecretName: "shared", DNSNames: []string{"a.example.com", "c.example.com"}, From: []string{"a", "c"}},
		{SecretName: "own", DNSNames: []string{"b.example.com"}, From: []string{"b"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("blocks = %+v, want %+v", got, want)
	}
}

func TestDesiredCertificates(t *testing.T) {
	src := sourceRef{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Namespace: "web", Name: "gw", UID: "uid-1"}
	issuerRef := certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "le"}
	dns01 := &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}}}
	alpn := &certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: "edge"}}}
	plain := tlsBlock{SecretName: "www-tls", DNSNames: []string{"www.example.com"}, From: []string{`listener "www"`}}
	wild := tlsBlock{SecretName: "wild-tls", DNSNames: []string{"*.example.com", "example.com"}, From: []string{`listener "wild"`}}

	for name, tc := range map[string]struct {
		template     template
		issuer       issuerSolver
		blocks       []tlsBlock
		wantNames    []string
		wantRefused  []string
		wantMessages []string
		wantReason   string
	}{
		"IP address host": {
			template: template{IssuerRef: issuerRef}, blocks: []tlsBlock{plain, {SecretName: "ip-tls", DNSNames: []string{"www.example.com", "192.0.2.1"}, From: []string{`listener "ip"`}}},
			wantNames: []string{"www-tls"}, wantRefused: []string{"ip-tls"}, wantReason: reasonHostIsIPAddress,
			wantMessages: []string{`listener "ip": 192.0.2.1 is an IP address, which a hostname cannot be`},
		},
		"more names than a certificate holds": {
			template: template{IssuerRef: issuerRef}, blocks: []tlsBlock{plain, {SecretName: "many-tls", DNSNames: manyNames(101), From: []string{"spec.tls[1]"}}},
			wantNames: []string{"www-tls"}, wantRefused: []string{"many-tls"}, wantReason: reasonTooManyNames,
			wantMessages: []string{"spec.tls[1]: 101 hostnames for Secret many-tls, more than the 100 one certificate holds"},
		},
		"as many names as a certificate holds": {
			template: template{IssuerRef: issuerRef}, blocks: []tlsBlock{{SecretName: "many-tls", DNSNames: manyNames(100), From: []string{"spec.tls[0]"}}},
			wantNames: []string{"many-tls"},
		},
		"no wildcard needs no issuer": {
			template: template{IssuerRef: issuerRef}, blocks: []tlsBlock{plain}, wantNames: []string{"www-tls"},
		},
		"wildcard with the issuer's dns01": {
			template: template{IssuerRef: issuerRef}, issuer: issuerSolver{Found: true, Solver: dns01},
			wantNames: []string{"www-tls", "wild-tls"},
		},
		"wildcard with the annotation's dns01": {
			template: template{IssuerRef: issuerRef, Solver: dns01}, issuer: issuerSolver{Found: true, Solver: alpn},
			wantNames: []string{"www-tls", "wild-tls"},
		},
		"wildcard with the issuer's tls-alpn-01": {
			template: template{IssuerRef: issuerRef}, issuer: issuerSolver{Found: true, Solver: alpn},
			wantNames: []string{"www-tls"}, wantRefused: []string{"wild-tls"},
			wantMessages: []string{`listener "wild": *.example.com needs a dns01 solver, but ClusterIssuer le's default solver is not dns01`},
		},
		"wildcard with the annotation's tls-alpn-01": {
			template: template{IssuerRef: issuerRef, Solver: alpn}, issuer: issuerSolver{Found: true, Solver: dns01},
			wantNames: []string{"www-tls"}, wantRefused: []string{"wild-tls"},
			wantMessages: []string{"the annotation certpilot.dev/solver sets another solver"},
		},
		"wildcard, issuer without solver": {
			template: template{IssuerRef: issuerRef}, issuer: issuerSolver{Found: true},
			wantNames: []string{"www-tls"}, wantRefused: []string{"wild-tls"}, wantMessages: []string{"has no default solver"},
		},
		"wildcard, issuer not found": {
			template:  template{IssuerRef: issuerRef},
			wantNames: []string{"www-tls"}, wantRefused: []string{"wild-tls"}, wantMessages: []string{"ClusterIssuer le was not found"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			blocks := tc.blocks
			if blocks == nil {
				blocks = []tlsBlock{plain, wild}
			}
			certs, refused, problems := desiredCertificates(src, tc.template, blocks, tc.issuer)
			var names, refusedNames []string
			for _, cert := range certs {
				names = append(names, cert.Name)
			}
			for _, block := range refused {
				refusedNames = append(refusedNames, block.SecretName)
			}
			if !reflect.DeepEqual(names, tc.wantNames) || !reflect.DeepEqual(refusedNames, tc.wantRefused) {
				t.Errorf("certificates %v refused %v, want %v and %v", names, refusedNames, tc.wantNames, tc.wantRefused)
			}
			if len(problems) != len(tc.wantMessages) {
				t.Fatalf("problems = %+v, want %d", problems, len(tc.wantMessages))
			}
			wantReason := tc.wantReason
			if wantReason == "" {
				wantReason = reasonWildcardNeedsDNS01
			}
			for i, p := range problems {
				if p.Reason != wantReason || !strings.Contains(p.Message, tc.wantMessages[i]) {
					t.Errorf("problem %+v, want %s containing %q", p, wantReason, tc.wantMessages[i])
				}
			}
		})
	}
}

func TestBuildCertificate(t *testing.T) {
	src := sourceRef{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Namespace: "web", Name: "gw", UID: "uid-1"}
	cert := buildCertificate(src, template{IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "le"}},
		tlsBlock{SecretName: "shared-tls", DNSNames: []string{"a.example.com", "b.example.com"}})
	if cert.Name != "shared-tls" || cert.Namespace != "web" || cert.Spec.SecretName != "shared-tls" {
		t.Errorf("name %s/%s secretName %s", cert.Namespace, cert.Name, cert.Spec.SecretName)
	}
	if !reflect.DeepEqual(cert.Spec.DNSNames, []string{"a.example.com", "b.example.com"}) {
		t.Errorf("dnsNames %v", cert.Spec.DNSNames)
	}
	if cert.Labels[LabelSourceKind] != "Gateway" || cert.Labels[LabelSourceName] != "gw" {
		t.Errorf("labels %v", cert.Labels)
	}
	owner := metav1.GetControllerOf(cert)
	if owner == nil || owner.UID != "uid-1" || owner.Kind != "Gateway" || !*owner.BlockOwnerDeletion {
		t.Errorf("controller %+v", owner)
	}
	long := src
	long.Name = strings.Repeat("g", 64)
	if _, ok := buildCertificate(long, template{}, tlsBlock{SecretName: "x"}).Labels[LabelSourceName]; ok {
		t.Error("a name longer than a label value is in the source-name label")
	}
	u, err := toUnstructured(cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Object["status"]; ok {
		t.Error("the apply request has a status")
	}
	if _, ok := u.Object["metadata"].(map[string]any)["creationTimestamp"]; ok {
		t.Error("the apply request has a creationTimestamp")
	}
	if _, ok := u.Object["spec"].(map[string]any)["renewBefore"]; ok {
		t.Error("the apply request sets renewBefore though no annotation does")
	}
}

func problemReasons(problems []problem) []string {
	var reasons []string
	for _, p := range problems {
		reasons = append(reasons, p.Reason)
	}
	return reasons
}

// manyNames returns n distinct hostnames.
func manyNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("host-%d.example.com", i)
	}
	return names
}
