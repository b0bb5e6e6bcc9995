package source

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// tlsEntry is one place of a source that asks for a certificate: a Gateway listener or an
// Ingress spec.tls[] entry, with the Secret it names and its hostnames.
type tlsEntry struct {
	// From names the entry in messages: `listener "https"` or `spec.tls[0]`.
	From       string
	SecretName string
	Hosts      []string
}

// problem is an entry that asked for a certificate and gets none; it becomes a Warning event
// on the source.
type problem struct {
	Reason, Message string
}

// Reasons of the Warning events on a source.
const (
	reasonInvalidAnnotation   = "InvalidAnnotation"
	reasonUnsupportedRef      = "UnsupportedCertificateRef"
	reasonNoSecretName        = "NoSecretName"
	reasonNoHosts             = "NoHosts"
	reasonWildcardNeedsDNS01  = "WildcardNeedsDNS01"
	reasonHostIsIPAddress     = "HostIsIPAddress"
	reasonTooManyNames        = "TooManyNames"
	reasonCertificateConflict = "CertificateConflict"
	reasonCertificateInvalid  = "CertificateInvalid"
)

// Reasons of the Normal events on a source.
const (
	reasonCertificateCreated = "CertificateCreated"
	reasonCertificateUpdated = "CertificateUpdated"
	reasonCertificateDeleted = "CertificateDeleted"
)

// tlsBlock is one Certificate a source wants: a Secret and every hostname of the entries that
// name it, in the order they first appear.
type tlsBlock struct {
	SecretName string
	DNSNames   []string
	From       []string
}

// groupBySecret merges the entries that name the same Secret (listeners sharing a Secret share
// one Certificate), keeping the order in which Secrets and hostnames first appear. Hostnames are
// lowercased and deduplicated.
func groupBySecret(entries []tlsEntry) []tlsBlock {
	var blocks []tlsBlock
	index := map[string]int{}
	for _, entry := range entries {
		i, ok := index[entry.SecretName]
		if !ok {
			i = len(blocks)
			index[entry.SecretName] = i
			blocks = append(blocks, tlsBlock{SecretName: entry.SecretName})
		}
		block := &blocks[i]
		block.From = append(block.From, entry.From)
		for _, host := range entry.Hosts {
			host = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
			if host != "" && !slices.Contains(block.DNSNames, host) {
				block.DNSNames = append(block.DNSNames, host)
			}
		}
	}
	return blocks
}

// sourceRef identifies the Gateway or Ingress that generates Certificates.
type sourceRef struct {
	APIVersion, Kind, Namespace, Name string
	UID                               types.UID
}

// issuerSolver is what a source knows of its issuer's default solver, for the wildcard rule.
type issuerSolver struct {
	// Found is false when the issuer does not exist (yet).
	Found  bool
	Solver *certpilotv1alpha1.Solver
}

// maxNames is the most names a Certificate holds (spec.dnsNames' MaxItems).
const maxNames = 100

// desiredCertificates is the decision: the Certificates a source wants, one per Secret, and the
// blocks it refuses. A block with a wildcard hostname needs a dns01 solver, from the solver
// annotation or else the issuer's default solver; without one it gets a problem, not a
// Certificate (the Certificate API would refuse it, or the order would fail at the CA).
func desiredCertificates(src sourceRef, t template, blocks []tlsBlock, issuer issuerSolver) (certs []*certpilotv1alpha1.Certificate, refused []tlsBlock, problems []problem) {
	for _, block := range blocks {
		// A Certificate holds at most maxNames names (its CRD, and an ACME order of the classic
		// profile): more would be refused by the API at every sync. The rule is to refuse, not
		// to split: one Secret holds one certificate, and the entries name the Secret.
		if len(block.DNSNames) > maxNames {
			refused = append(refused, block)
			problems = append(problems, problem{Reason: reasonTooManyNames, Message: fmt.Sprintf(
				"%s: %d hostnames for Secret %s, more than the %d one certificate holds: no Certificate; name a Secret per group of at most %d hostnames",
				strings.Join(block.From, ", "), len(block.DNSNames), block.SecretName, maxNames, maxNames)})
			continue
		}
		// An Ingress host cannot be an IP address (the API refuses it); a Gateway listener
		// hostname must not be one (the Gateway API says so, though its CRD admits IPv4
		// literals), and SNI never carries one, so such a listener matches no connection.
		// Certificates for IP addresses come from a Certificate's spec.ipAddresses.
		if i := slices.IndexFunc(block.DNSNames, certpilotv1alpha1.IsIPAddress); i >= 0 {
			refused = append(refused, block)
			problems = append(problems, problem{Reason: reasonHostIsIPAddress, Message: fmt.Sprintf(
				"%s: %s is an IP address, which a hostname cannot be (TLS clients send no IP address as SNI): no Certificate for Secret %s; for a certificate of an IP address create a Certificate with spec.ipAddresses",
				strings.Join(block.From, ", "), block.DNSNames[i], block.SecretName)})
			continue
		}
		if wildcard := firstWildcard(block.DNSNames); wildcard != "" {
			if message := wildcardSolverProblem(t, issuer); message != "" {
				refused = append(refused, block)
				problems = append(problems, problem{Reason: reasonWildcardNeedsDNS01, Message: fmt.Sprintf(
					"%s: %s needs a dns01 solver, but %s: no Certificate for Secret %s",
					strings.Join(block.From, ", "), wildcard, message, block.SecretName)})
				continue
			}
		}
		certs = append(certs, buildCertificate(src, t, block))
	}
	return certs, refused, problems
}

// wildcardSolverProblem says why the solver that would validate a wildcard is not dns01; empty
// when it is.
func wildcardSolverProblem(t template, issuer issuerSolver) string {
	if t.Solver != nil {
		if solvesWildcards(t.Solver) {
			return ""
		}
		return fmt.Sprintf("the annotation %s sets another solver", AnnotationSolver)
	}
	ref := t.IssuerRef.Kind + " " + t.IssuerRef.Name
	switch {
	case !issuer.Found:
		return ref + " was not found"
	case issuer.Solver == nil:
		return ref + " has no default solver (set the annotation " + AnnotationSolver + ")"
	case !solvesWildcards(issuer.Solver):
		return ref + "'s default solver is not dns01 (set the annotation " + AnnotationSolver + ")"
	}
	return ""
}

// solvesWildcards reports whether a solver can validate wildcard names: only dns01 can (and
// dns-persist-01, once the API has it).
func solvesWildcards(s *certpilotv1alpha1.Solver) bool {
	return s != nil && s.DNS01 != nil
}

func firstWildcard(names []string) string {
	for _, name := range names {
		if strings.HasPrefix(name, "*.") {
			return name
		}
	}
	return ""
}

// buildCertificate is the Certificate of one block: named after its Secret, labelled with its
// source and controlled by it.
func buildCertificate(src sourceRef, t template, block tlsBlock) *certpilotv1alpha1.Certificate {
	labels := map[string]string{LabelSourceKind: src.Kind}
	if len(validation.IsValidLabelValue(src.Name)) == 0 {
		labels[LabelSourceName] = src.Name
	}
	return &certpilotv1alpha1.Certificate{
		TypeMeta: metav1.TypeMeta{APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      block.SecretName,
			Namespace: src.Namespace,
			Labels:    labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion:         src.APIVersion,
				Kind:               src.Kind,
				Name:               src.Name,
				UID:                src.UID,
				Controller:         ptrTo(true),
				BlockOwnerDeletion: ptrTo(true),
			}},
		},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:           slices.Clone(block.DNSNames),
			SecretName:         block.SecretName,
			IssuerRef:          t.IssuerRef,
			FallbackIssuerRefs: slices.Clone(t.FallbackIssuerRefs),
			RenewBefore:        t.RenewBefore,
			PrivateKey:         t.PrivateKey,
			Solver:             t.Solver,
		},
	}
}

func ptrTo[T any](v T) *T { return &v }
