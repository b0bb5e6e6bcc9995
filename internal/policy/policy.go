// Package policy decides whether a namespace may use a ClusterIssuer for a set of names: the
// administrator's grant of docs/tenancy.md. The decision is a pure function of an Input the
// caller reads (the ClusterIssuer's spec.policy, the Certificate's namespace with its labels and
// annotations, the names); it reads nothing itself, so it is table-tested without an apiserver.
//
// The certificate flow calls it before any ACME order, for every solver, and for Certificates
// generated from Ingresses and Gateways alike (they are Certificates in the source's
// namespace). A refusal is permanent until an administrator or the spec changes: the flow marks
// the Certificate Stalled with Decision.Reason and Decision.Message.
package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// Reasons of a refusal: the rule that refused, for a Stalled condition.
const (
	// ReasonNamespaceNotAllowed: the ClusterIssuer's namespaceSelector does not select the
	// Certificate's namespace.
	ReasonNamespaceNotAllowed = "NamespaceNotAllowed"
	// ReasonDNSNameNotAllowed: a name is outside the ClusterIssuer's dnsZones, or outside the
	// zones the namespace's certpilot.dev/allowed-dns-zones annotation grants.
	ReasonDNSNameNotAllowed = "DNSNameNotAllowed"
	// ReasonInvalidIssuerPolicy: the ClusterIssuer's policy cannot be evaluated (a selector the
	// apiserver admitted but labels cannot parse); it grants nothing until fixed.
	ReasonInvalidIssuerPolicy = "InvalidIssuerPolicy"
)

// Input is what one decision reads.
type Input struct {
	// IssuerKind and IssuerName name the issuer, for messages ("ClusterIssuer", "shared-le").
	IssuerKind, IssuerName string
	// Policy is the issuer's spec.policy; nil grants every namespace any name.
	Policy *certpilotv1alpha1.IssuerPolicy
	// Namespace is the Certificate's namespace; NamespaceLabels and NamespaceAnnotations are the
	// Namespace object's (administrators set them; tenants cannot).
	Namespace            string
	NamespaceLabels      map[string]string
	NamespaceAnnotations map[string]string
	// DNSNames are the names the Certificate requests: its DNS names and IP addresses. An IP
	// address is in no DNS zone, so an issuer or namespace restricted to zones refuses it.
	DNSNames []string
}

// InputFor builds the Input of a Certificate in namespace (the Namespace object, as read) that
// requests dnsNames from issuer. An Issuer (namespaced) has no policy: it serves its own
// namespace only. namespace may be nil for an Issuer; for a ClusterIssuer with a policy, nil
// stands for a namespace without labels or annotations, which a selector or a namespace grant
// refuses.
func InputFor(issuer certpilotv1alpha1.GenericIssuer, namespace *corev1.Namespace, dnsNames []string) Input {
	input := Input{IssuerKind: issuer.Kind(), IssuerName: issuer.GetName(), DNSNames: dnsNames}
	if issuer.GetNamespace() == "" {
		input.Policy = issuer.GetSpec().Policy
	}
	if namespace != nil {
		input.Namespace = namespace.Name
		input.NamespaceLabels = namespace.Labels
		input.NamespaceAnnotations = namespace.Annotations
	}
	return input
}

// Decision is the outcome: Allowed, or refused by the rule Reason names, with a message for
// the Certificate's status (at most a few hundred bytes).
type Decision struct {
	Allowed bool
	Reason  string
	Message string
}

var allowed = Decision{Allowed: true}

func refused(reason, format string, args ...any) Decision {
	return Decision{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Decide applies the issuer's policy, rule by rule: the namespace selector, the issuer's DNS
// zones, then the namespace's own DNS zones. The first rule that refuses decides.
func Decide(in Input) Decision {
	if in.Policy == nil {
		return allowed
	}
	issuer := fmt.Sprintf("%s %s", in.IssuerKind, in.IssuerName)
	if selector := in.Policy.NamespaceSelector; selector != nil {
		parsed, err := metav1.LabelSelectorAsSelector(selector)
		if err != nil {
			return refused(ReasonInvalidIssuerPolicy, "%s has a spec.policy.namespaceSelector that cannot be evaluated (%s): it serves no namespace until an administrator fixes it",
				issuer, cut(err.Error(), 200))
		}
		if !parsed.Matches(labels.Set(in.NamespaceLabels)) {
			return refused(ReasonNamespaceNotAllowed, "%s does not serve namespace %s: its spec.policy.namespaceSelector (%s) does not select it; an administrator grants it by labelling the namespace",
				issuer, in.Namespace, cut(metav1.FormatLabelSelector(selector), 200))
		}
	}
	if len(in.Policy.DNSZones) > 0 {
		zones := normalizedZones(in.Policy.DNSZones)
		if outside := namesOutside(in.DNSNames, zones); len(outside) > 0 {
			return refused(ReasonDNSNameNotAllowed, "%s issues only names in its zones %s (spec.policy.dnsZones): %s outside them",
				issuer, list(zones), listNames(outside))
		}
	}
	if in.Policy.NamespaceDNSZones == certpilotv1alpha1.NamespaceDNSZonesRequire {
		value, ok := in.NamespaceAnnotations[certpilotv1alpha1.AnnotationAllowedDNSZones]
		if !ok {
			return refused(ReasonDNSNameNotAllowed, "%s issues for namespace %s only names in the zones its annotation %s grants, and the namespace has none: it is granted no name until an administrator annotates it",
				issuer, in.Namespace, certpilotv1alpha1.AnnotationAllowedDNSZones)
		}
		zones, invalid := ParseZones(value)
		if outside := namesOutside(in.DNSNames, zones); len(outside) > 0 {
			ignored := ""
			if len(invalid) > 0 {
				ignored = fmt.Sprintf(" (entries that are not zones are ignored: %s)", list(invalid))
			}
			return refused(ReasonDNSNameNotAllowed, "%s issues for namespace %s only names in the zones its annotation %s grants, %s%s: %s outside them",
				issuer, in.Namespace, certpilotv1alpha1.AnnotationAllowedDNSZones, list(zones), ignored, listNames(outside))
		}
	}
	return allowed
}

// maxZones is how many zones of an annotation are read.
const maxZones = 64

// zonePattern is a DNS zone as the CRD's dnsZones accepts it: lowercase labels, no wildcard.
var zonePattern = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ParseZones reads the value of the certpilot.dev/allowed-dns-zones annotation: zones separated
// by commas or white space, case and a trailing dot ignored. It returns the zones, and the
// entries it ignored because they are not DNS zones (a wildcard, an IP address with a port, ...).
// At most 64 entries are read.
func ParseZones(value string) (zones, invalid []string) {
	fields := strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	for i, field := range fields {
		if i == maxZones {
			invalid = append(invalid, fmt.Sprintf("%d more entries", len(fields)-maxZones))
			break
		}
		zone := strings.TrimSuffix(strings.ToLower(field), ".")
		if len(zone) > 253 || !zonePattern.MatchString(zone) {
			invalid = append(invalid, field)
			continue
		}
		zones = append(zones, zone)
	}
	return normalizedZones(zones), invalid
}

func normalizedZones(zones []string) []string {
	out := make([]string, 0, len(zones))
	for _, zone := range zones {
		out = append(out, strings.TrimSuffix(strings.ToLower(zone), "."))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// InZones reports whether name (a wildcard counts as its base name) is one of zones or under
// one of them.
func InZones(name string, zones []string) bool {
	name = strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(name, "*.")), ".")
	for _, zone := range zones {
		if name == zone || strings.HasSuffix(name, "."+zone) {
			return true
		}
	}
	return false
}

func namesOutside(names, zones []string) []string {
	var outside []string
	for _, name := range names {
		if !InZones(name, zones) {
			outside = append(outside, name)
		}
	}
	return outside
}

// listNames says which names are outside: "a.example is" or "[a.example b.example] are".
func listNames(names []string) string {
	if len(names) == 1 {
		return cut(names[0], 253) + " is"
	}
	return list(names) + " are"
}

// list prints at most five entries, each cut to a DNS name's length.
func list(entries []string) string {
	const shown = 5
	parts := make([]string, 0, shown+1)
	for i, entry := range entries {
		if i == shown {
			parts = append(parts, fmt.Sprintf("and %d more", len(entries)-shown))
			break
		}
		parts = append(parts, cut(entry, 253))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func cut(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	return strings.ToValidUTF8(s[:limit], "") + "…"
}
