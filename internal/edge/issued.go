package edge

import (
	"crypto/tls"
	"fmt"
	"math/big"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/pki"
)

// Why a certificate Secret is not served (the reason label of
// certpilot_edge_certificates_refused_total).
const (
	// refusedInvalid: the Secret's certificate does not parse, or its key is not the leaf's.
	refusedInvalid = "invalid"
	// refusedNotControlled: the Secret has no controller owner reference to a Certificate.
	refusedNotControlled = "not_controlled"
	// refusedOwnerNotFound: no Certificate of that name and UID in the Secret's namespace.
	refusedOwnerNotFound = "owner_not_found"
	// refusedNameNotCovered: none of the leaf's names is one of the Certificate's dnsNames or
	// ipAddresses.
	refusedNameNotCovered = "name_not_covered"
	// refusedSerialNotIssued: the leaf's serial is not the Certificate's status.serialNumber.
	refusedSerialNotIssued = "serial_not_issued"
	// refusedNamespaceNotAllowed: HostNamespaces lets no covered name be served from the
	// Secret's namespace.
	refusedNamespaceNotAllowed = "namespace_not_allowed"
)

// issuer is what the edge keeps of a Certificate to judge the Secrets it controls.
type issuer struct {
	uid types.UID
	// dnsNames are spec.dnsNames, lower case, and spec.ipAddresses in canonical form.
	dnsNames []string
	// serial is status.serialNumber parsed (nil: none recorded).
	serial *big.Int
}

// newIssuer keeps what judgeSecret needs of cert.
func newIssuer(cert *v1alpha1.Certificate) issuer {
	record := issuer{uid: cert.UID}
	for _, name := range cert.Spec.Identifiers() {
		record.dnsNames = append(record.dnsNames, normalizeName(name))
	}
	// The manager records the serial as fmt.Sprintf("%x", leaf.SerialNumber); parsing it
	// compares numbers, whatever the case or leading zeros.
	if serial, ok := new(big.Int).SetString(cert.Status.SerialNumber, 16); ok {
		record.serial = serial
	}
	return record
}

// judgeSecret decides which names certificate, held by a certificate Secret in namespace whose
// controller owner reference is owner (nil: none), may be served for: a Certificate of
// issuers (by "namespace/name") must control the Secret by name and UID, the names are those
// (DNS names and IP addresses) of the leaf that the Certificate's dnsNames and ipAddresses cover
// and hosts (nil: any) lets namespace serve,
// and, when checkSerial, the leaf's serial must be the one the Certificate's status records as
// issued. It returns the names, or the reason (refused*) it refuses them all. certificate was
// parsed by LoadKeyPair or ParseBundle, which check that the key is the leaf's.
func judgeSecret(namespace string, owner *metav1.OwnerReference, certificate *tls.Certificate, issuers map[string]issuer, hosts *HostNamespaces, checkSerial bool) (names []string, reason string) {
	if certificate == nil || certificate.Leaf == nil {
		return nil, refusedInvalid
	}
	if owner == nil || owner.Kind != "Certificate" || groupOf(owner.APIVersion) != v1alpha1.GroupVersion.Group {
		return nil, refusedNotControlled
	}
	record, ok := issuers[namespace+"/"+owner.Name]
	if !ok || record.uid != owner.UID {
		return nil, refusedOwnerNotFound
	}
	names = coveredNames(pki.LeafNames(certificate.Leaf), record.dnsNames)
	if len(names) == 0 {
		return nil, refusedNameNotCovered
	}
	if hosts != nil {
		names = slices.DeleteFunc(names, func(name string) bool { return !hosts.Allows(name, namespace) })
		if len(names) == 0 {
			return nil, refusedNamespaceNotAllowed
		}
	}
	if checkSerial && (record.serial == nil || record.serial.Cmp(certificate.Leaf.SerialNumber) != 0) {
		return nil, refusedSerialNotIssued
	}
	return names, ""
}

// coveredNames returns the leaf names that dnsNames cover, lower case: a name listed there,
// or a name one label under a wildcard listed there (as the edge matches wildcards: *.a.test
// covers b.a.test, not a.test nor c.b.a.test). A wildcard leaf name is covered only by the same
// wildcard.
func coveredNames(leafNames, dnsNames []string) []string {
	listed := make(map[string]bool, len(dnsNames))
	for _, name := range dnsNames {
		listed[name] = true
	}
	names := []string{}
	for _, name := range leafNames {
		name = normalizeName(name)
		covered := listed[name]
		if !covered && !strings.HasPrefix(name, "*.") {
			if _, parent, ok := strings.Cut(name, "."); ok && parent != "" {
				covered = listed["*."+parent]
			}
		}
		if covered {
			names = append(names, name)
		}
	}
	return names
}

// normalizeName is name in lower case without a trailing dot, or, for an IP address, its
// canonical form.
func normalizeName(name string) string {
	if addr, ok := pki.ParseIP(name); ok {
		return addr.String()
	}
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// groupOf returns the API group of an owner reference's apiVersion ("group/version", or
// "version" for the core group).
func groupOf(apiVersion string) string {
	group, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return ""
	}
	return group.Group
}

// isClaimSecret reports whether secret is, or is named like, a claim Secret or an earlier
// version's next-key Secret: both hold the private key of a certificate not issued yet, carry
// the labels of a certificate Secret when an older manager made them, and are never read into
// the edge.
func isClaimSecret(name string, labels, annotations map[string]string) bool {
	_, labelled := labels[v1alpha1.LabelClaim]
	_, annotated := annotations[annotationClaimOf]
	return labelled || annotated ||
		strings.HasSuffix(name, v1alpha1.ClaimSecretSuffix) || strings.HasSuffix(name, v1alpha1.NextKeySecretSuffix)
}

// HostNamespaces is an administrator's map from DNS names to the namespaces whose certificates
// the edge may serve for them (--certificate-host-namespaces): with it, a name is served only
// from a namespace an entry covering the name lists, and names no entry covers from none. A
// pattern is a DNS name (that name only) or "*." and a domain (every name under the domain, at
// any depth, wildcard names included; not the domain itself).
type HostNamespaces struct {
	entries []hostNamespace
}

type hostNamespace struct {
	pattern, namespace string
}

// ParseHostNamespaces parses "PATTERN=NAMESPACE" entries (one namespace each; repeat a pattern
// for more).
func ParseHostNamespaces(entries []string) (*HostNamespaces, error) {
	hosts := &HostNamespaces{}
	for _, entry := range entries {
		pattern, namespace, ok := strings.Cut(entry, "=")
		pattern, namespace = normalizeName(strings.TrimSpace(pattern)), strings.TrimSpace(namespace)
		domain := strings.TrimPrefix(pattern, "*.")
		if !ok || namespace == "" || domain == "" || strings.Contains(domain, "*") {
			return nil, fmt.Errorf("host namespace entry %q: want PATTERN=NAMESPACE, PATTERN a DNS name or *.DOMAIN", entry)
		}
		hosts.entries = append(hosts.entries, hostNamespace{pattern: pattern, namespace: namespace})
	}
	return hosts, nil
}

// Allows reports whether name (lower case) may be served from namespace.
func (h *HostNamespaces) Allows(name, namespace string) bool {
	for _, entry := range h.entries {
		if entry.namespace != namespace {
			continue
		}
		if domain, ok := strings.CutPrefix(entry.pattern, "*."); ok {
			if strings.HasSuffix(name, "."+domain) {
				return true
			}
		} else if name == entry.pattern {
			return true
		}
	}
	return false
}

// annotationClaimOf is set by the manager on a claim Secret: the secretName it reserves.
const annotationClaimOf = "certpilot.dev/claim-of"
