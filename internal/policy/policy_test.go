package policy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

func TestDecide(t *testing.T) {
	teamA := &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "a"}}
	zonesRequired := func(p certpilotv1alpha1.IssuerPolicy) *certpilotv1alpha1.IssuerPolicy {
		p.NamespaceDNSZones = certpilotv1alpha1.NamespaceDNSZonesRequire
		return &p
	}
	grant := func(value string) map[string]string {
		return map[string]string{certpilotv1alpha1.AnnotationAllowedDNSZones: value}
	}
	tests := map[string]struct {
		policy      *certpilotv1alpha1.IssuerPolicy
		labels      map[string]string
		annotations map[string]string
		names       []string
		wantReason  string // empty: allowed
		wantMessage string
	}{
		"no policy: today's behaviour, any namespace, any name": {names: []string{"anything.example"}},
		"empty policy":                                 {policy: &certpilotv1alpha1.IssuerPolicy{}, names: []string{"anything.example"}},
		"explicit Ignore":                              {policy: &certpilotv1alpha1.IssuerPolicy{NamespaceDNSZones: certpilotv1alpha1.NamespaceDNSZonesIgnore}, names: []string{"x.example"}},
		"selector selects the namespace":               {policy: &certpilotv1alpha1.IssuerPolicy{NamespaceSelector: teamA}, labels: map[string]string{"tenant": "a"}, names: []string{"a.example"}},
		"empty selector selects every namespace":       {policy: &certpilotv1alpha1.IssuerPolicy{NamespaceSelector: &metav1.LabelSelector{}}, names: []string{"a.example"}},
		"selector does not select the namespace":       {policy: &certpilotv1alpha1.IssuerPolicy{NamespaceSelector: teamA}, labels: map[string]string{"tenant": "b"}, names: []string{"a.example"}, wantReason: ReasonNamespaceNotAllowed, wantMessage: "ClusterIssuer shared does not serve namespace team-b: its spec.policy.namespaceSelector (tenant=a) does not select it"},
		"selector, namespace without labels":           {policy: &certpilotv1alpha1.IssuerPolicy{NamespaceSelector: teamA}, names: []string{"a.example"}, wantReason: ReasonNamespaceNotAllowed},
		"selector with an expression":                  {policy: &certpilotv1alpha1.IssuerPolicy{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tenant", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "c"}}}}}, labels: map[string]string{"tenant": "c"}, names: []string{"a.example"}},
		"invalid selector grants nothing":              {policy: &certpilotv1alpha1.IssuerPolicy{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tenant", Operator: "Near"}}}}, names: []string{"a.example"}, wantReason: ReasonInvalidIssuerPolicy},
		"issuer zones: name inside":                    {policy: &certpilotv1alpha1.IssuerPolicy{DNSZones: []string{"corp.example"}}, names: []string{"www.corp.example", "corp.example"}},
		"issuer zones: wildcard inside":                {policy: &certpilotv1alpha1.IssuerPolicy{DNSZones: []string{"corp.example"}}, names: []string{"*.corp.example"}},
		"issuer zones: name outside":                   {policy: &certpilotv1alpha1.IssuerPolicy{DNSZones: []string{"corp.example"}}, names: []string{"www.corp.example", "victim.example"}, wantReason: ReasonDNSNameNotAllowed, wantMessage: "ClusterIssuer shared issues only names in its zones [corp.example] (spec.policy.dnsZones): victim.example is outside them"},
		"issuer zones: an IP address is in no zone":    {policy: &certpilotv1alpha1.IssuerPolicy{DNSZones: []string{"corp.example", "2.0.192.in-addr.arpa"}}, names: []string{"www.corp.example", "192.0.2.1"}, wantReason: ReasonDNSNameNotAllowed, wantMessage: "192.0.2.1 is outside them"},
		"namespace zones: an IP address is in no zone": {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), annotations: grant("team-b.example.com"), names: []string{"::1"}, wantReason: ReasonDNSNameNotAllowed},
		"no policy: an IP address":                     {names: []string{"192.0.2.1"}},
		"issuer zones: a suffix is not a zone":         {policy: &certpilotv1alpha1.IssuerPolicy{DNSZones: []string{"corp.example"}}, names: []string{"evilcorp.example"}, wantReason: ReasonDNSNameNotAllowed},
		"namespace zones: granted":                     {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), annotations: grant("team-b.example.com, team-b.example.net"), names: []string{"www.team-b.example.com", "team-b.example.net"}},
		"namespace zones: wildcard of the zone":        {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), annotations: grant("team-b.example.com"), names: []string{"*.team-b.example.com"}},
		"namespace zones: another tenant's name":       {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), annotations: grant("team-b.example.com"), names: []string{"www.team-b.example.com", "team-a.example.com"}, wantReason: ReasonDNSNameNotAllowed, wantMessage: "ClusterIssuer shared issues for namespace team-b only names in the zones its annotation certpilot.dev/allowed-dns-zones grants, [team-b.example.com]: team-a.example.com is outside them"},
		"namespace zones: another tenant's wildcard":   {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), annotations: grant("team-b.example.com"), names: []string{"*.example.com"}, wantReason: ReasonDNSNameNotAllowed},
		"namespace zones: no annotation":               {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), names: []string{"www.team-b.example.com"}, wantReason: ReasonDNSNameNotAllowed, wantMessage: "the namespace has none: it is granted no name"},
		"namespace zones: empty annotation":            {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), annotations: grant(""), names: []string{"a.example"}, wantReason: ReasonDNSNameNotAllowed},
		"namespace zones: invalid entries named":       {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), annotations: grant("*.example.com"), names: []string{"a.example.com"}, wantReason: ReasonDNSNameNotAllowed, wantMessage: "entries that are not zones are ignored: [*.example.com]"},
		"namespace zones: case and trailing dot":       {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{}), annotations: grant("Team-B.Example.COM."), names: []string{"www.team-b.example.com"}},
		"both zones must hold":                         {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{DNSZones: []string{"example.com"}}), annotations: grant("team-b.example.net"), names: []string{"www.team-b.example.net"}, wantReason: ReasonDNSNameNotAllowed, wantMessage: "spec.policy.dnsZones"},
		"selector refuses before zones are read":       {policy: zonesRequired(certpilotv1alpha1.IssuerPolicy{NamespaceSelector: teamA}), annotations: grant("team-b.example.com"), names: []string{"www.team-b.example.com"}, wantReason: ReasonNamespaceNotAllowed},
		"many names outside: the message is short":     {policy: &certpilotv1alpha1.IssuerPolicy{DNSZones: []string{"corp.example"}}, names: manyNames(100), wantReason: ReasonDNSNameNotAllowed, wantMessage: "and 95 more] are outside them"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Decide(Input{IssuerKind: "ClusterIssuer", IssuerName: "shared", Policy: tc.policy, Namespace: "team-b",
				NamespaceLabels: tc.labels, NamespaceAnnotations: tc.annotations, DNSNames: tc.names})
			if tc.wantReason == "" {
				if !got.Allowed {
					t.Fatalf("refused (%s: %s), want allowed", got.Reason, got.Message)
				}
				return
			}
			if got.Allowed || got.Reason != tc.wantReason {
				t.Fatalf("Decide = %+v, want refused by %s", got, tc.wantReason)
			}
			if !strings.Contains(got.Message, tc.wantMessage) {
				t.Errorf("message %q does not say %q", got.Message, tc.wantMessage)
			}
			if len(got.Message) > 1024 {
				t.Errorf("message of %d bytes, want at most 1024", len(got.Message))
			}
		})
	}
}

func manyNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = strings.Repeat("x", 60) + string(rune('a'+i%26)) + ".victim.example"
	}
	return names
}

func TestInputFor(t *testing.T) {
	policy := &certpilotv1alpha1.IssuerPolicy{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "a"}}}
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Labels: map[string]string{"tenant": "b"}}}

	cluster := &certpilotv1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "shared"}, Spec: certpilotv1alpha1.IssuerSpec{Policy: policy}}
	if got := Decide(InputFor(cluster, namespace, []string{"a.example"})); got.Allowed || got.Reason != ReasonNamespaceNotAllowed {
		t.Errorf("ClusterIssuer with a selector for another tenant: %+v, want NamespaceNotAllowed", got)
	}
	// An Issuer serves its own namespace; a policy on it (which admission refuses) is not read.
	issuer := &certpilotv1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Name: "own", Namespace: "team-b"}, Spec: certpilotv1alpha1.IssuerSpec{Policy: policy}}
	if got := Decide(InputFor(issuer, nil, []string{"a.example"})); !got.Allowed {
		t.Errorf("Issuer: %+v, want allowed", got)
	}
}

func TestParseZones(t *testing.T) {
	tests := map[string]struct {
		value          string
		zones, invalid string
	}{
		"commas":            {value: "a.example,b.example", zones: "a.example b.example"},
		"spaces and commas": {value: " b.example , a.example\n c.example ", zones: "a.example b.example c.example"},
		"duplicates":        {value: "a.example,A.example.", zones: "a.example"},
		"wildcard":          {value: "*.a.example,b.example", zones: "b.example", invalid: "*.a.example"},
		"address and port":  {value: "10.0.0.1:53", invalid: "10.0.0.1:53"},
		"single label":      {value: "internal", zones: "internal"},
		"empty":             {value: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			zones, invalid := ParseZones(tc.value)
			if got := strings.Join(zones, " "); got != tc.zones {
				t.Errorf("zones = %q, want %q", got, tc.zones)
			}
			if got := strings.Join(invalid, " "); got != tc.invalid {
				t.Errorf("invalid = %q, want %q", got, tc.invalid)
			}
		})
	}
	many := strings.Repeat("a.example,", 100)
	if zones, invalid := ParseZones(many); len(zones) != 1 || len(invalid) != 1 {
		t.Errorf("100 entries: zones %v, invalid %v; want one zone and a note of the entries not read", zones, invalid)
	}
}
