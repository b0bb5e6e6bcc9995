package source

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// The annotations a user sets on a Gateway or an Ingress. One of the two issuer annotations
// turns the source on; the others are optional and fill in the Certificate spec field of the
// same name.
const (
	// AnnotationIssuer names an Issuer in the source's namespace.
	AnnotationIssuer = "certpilot.dev/issuer"
	// AnnotationClusterIssuer names a ClusterIssuer.
	AnnotationClusterIssuer = "certpilot.dev/cluster-issuer"
	// AnnotationRenewBefore is spec.renewBefore, a Go duration such as "720h".
	AnnotationRenewBefore = "certpilot.dev/renew-before"
	// AnnotationPrivateKeyAlgorithm is spec.privateKey.algorithm: ECDSA or RSA.
	AnnotationPrivateKeyAlgorithm = "certpilot.dev/private-key-algorithm"
	// AnnotationPrivateKeySize is spec.privateKey.size in bits.
	AnnotationPrivateKeySize = "certpilot.dev/private-key-size"
	// AnnotationSolver is spec.solver as YAML or JSON, for example
	// `{"dns01": {"rfc2136": {...}}}`. Default: the issuer's solver.
	AnnotationSolver = "certpilot.dev/solver"
	// AnnotationFallbackIssuers is spec.fallbackIssuerRefs: issuers tried in order when the
	// issuer annotation's cannot issue, comma-separated, each "Issuer/name", "ClusterIssuer/name"
	// or a bare name of the issuer annotation's kind. At most 3.
	AnnotationFallbackIssuers = "certpilot.dev/fallback-issuers"
)

// Labels on the Certificates a source generates.
const (
	// LabelSourceKind is "Gateway" or "Ingress".
	LabelSourceKind = "certpilot.dev/source-kind"
	// LabelSourceName is the source's name (omitted when it does not fit a label value; the
	// controller owner reference is what certpilot goes by).
	LabelSourceName = "certpilot.dev/source-name"
)

// FieldManager is the one server-side apply field manager of every generated Certificate.
const FieldManager = "certpilot-source"

// minRenewBefore is the Certificate API's lower bound on renewBefore.
const minRenewBefore = 5 * time.Minute

// template is what the annotations put into every Certificate of one source.
type template struct {
	IssuerRef          certpilotv1alpha1.IssuerReference
	FallbackIssuerRefs []certpilotv1alpha1.IssuerReference
	RenewBefore        *metav1.Duration
	PrivateKey         *certpilotv1alpha1.PrivateKey
	Solver             *certpilotv1alpha1.Solver
}

// parseAnnotations reads a source's annotations. annotated is false when neither issuer
// annotation is there (the source wants no Certificates); err describes the first annotation
// that cannot be used, in words for a Warning event.
func parseAnnotations(annotations map[string]string) (t template, annotated bool, err error) {
	issuer, hasIssuer := annotations[AnnotationIssuer]
	clusterIssuer, hasClusterIssuer := annotations[AnnotationClusterIssuer]
	switch {
	case !hasIssuer && !hasClusterIssuer:
		return template{}, false, nil
	case hasIssuer && hasClusterIssuer:
		return template{}, true, fmt.Errorf("set one of the annotations %s and %s, not both", AnnotationIssuer, AnnotationClusterIssuer)
	case hasIssuer:
		t.IssuerRef = certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: strings.TrimSpace(issuer)}
	default:
		t.IssuerRef = certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: strings.TrimSpace(clusterIssuer)}
	}
	if t.IssuerRef.Name == "" {
		return template{}, true, fmt.Errorf("the annotation %s names no issuer", issuerAnnotation(t.IssuerRef.Kind))
	}

	if t.FallbackIssuerRefs, err = parseFallbackIssuers(annotations, t.IssuerRef); err != nil {
		return template{}, true, err
	}

	if value, ok := annotations[AnnotationRenewBefore]; ok {
		renewBefore, err := time.ParseDuration(strings.TrimSpace(value))
		if err != nil {
			return template{}, true, fmt.Errorf("the annotation %s is not a duration such as 720h: %q", AnnotationRenewBefore, value)
		}
		if renewBefore < minRenewBefore {
			return template{}, true, fmt.Errorf("the annotation %s must be at least 5m, not %s", AnnotationRenewBefore, value)
		}
		t.RenewBefore = &metav1.Duration{Duration: renewBefore}
	}

	if t.PrivateKey, err = parsePrivateKey(annotations); err != nil {
		return template{}, true, err
	}

	if value, ok := annotations[AnnotationSolver]; ok {
		solver := &certpilotv1alpha1.Solver{}
		if err := yaml.UnmarshalStrict([]byte(value), solver); err != nil {
			return template{}, true, fmt.Errorf("the annotation %s is not a solver as in a Certificate's spec.solver: %v", AnnotationSolver, err)
		}
		if solverTypes(solver) != 1 {
			return template{}, true, fmt.Errorf("the annotation %s must set exactly one solver: tlsALPN01, http01 or dns01", AnnotationSolver)
		}
		t.Solver = solver
	}
	return t, true, nil
}

// maxFallbackIssuers is the Certificate API's bound on spec.fallbackIssuerRefs.
const maxFallbackIssuers = 3

// parseFallbackIssuers reads the fallback issuers annotation; nil when it is not set. The API's
// rules (at most 3, no issuer twice, not the issuer itself) are checked here, so that a wrong
// list is reported on the source rather than as a refused apply.
func parseFallbackIssuers(annotations map[string]string, issuer certpilotv1alpha1.IssuerReference) ([]certpilotv1alpha1.IssuerReference, error) {
	value, ok := annotations[AnnotationFallbackIssuers]
	if !ok || strings.TrimSpace(value) == "" {
		return nil, nil
	}
	var refs []certpilotv1alpha1.IssuerReference
	for _, entry := range strings.Split(value, ",") {
		entry = strings.TrimSpace(entry)
		ref := certpilotv1alpha1.IssuerReference{Kind: issuer.Kind, Name: entry}
		if kind, name, found := strings.Cut(entry, "/"); found {
			ref = certpilotv1alpha1.IssuerReference{Kind: strings.TrimSpace(kind), Name: strings.TrimSpace(name)}
		}
		if ref.Kind != "Issuer" && ref.Kind != "ClusterIssuer" {
			return nil, fmt.Errorf("the annotation %s: %q is not Issuer/<name>, ClusterIssuer/<name> or a name", AnnotationFallbackIssuers, entry)
		}
		if ref.Name == "" {
			return nil, fmt.Errorf("the annotation %s lists an empty issuer name", AnnotationFallbackIssuers)
		}
		if ref == issuer || slices.Contains(refs, ref) {
			return nil, fmt.Errorf("the annotation %s lists %s %s twice (or the issuer itself)", AnnotationFallbackIssuers, ref.Kind, ref.Name)
		}
		refs = append(refs, ref)
	}
	if len(refs) > maxFallbackIssuers {
		return nil, fmt.Errorf("the annotation %s lists %d issuers; at most %d", AnnotationFallbackIssuers, len(refs), maxFallbackIssuers)
	}
	return refs, nil
}

// parsePrivateKey reads the two private key annotations; nil when neither is set. The sizes
// follow the Certificate API's rules, so a wrong size is reported on the source rather than as
// a refused apply.
func parsePrivateKey(annotations map[string]string) (*certpilotv1alpha1.PrivateKey, error) {
	algorithm, hasAlgorithm := annotations[AnnotationPrivateKeyAlgorithm]
	sizeValue, hasSize := annotations[AnnotationPrivateKeySize]
	if !hasAlgorithm && !hasSize {
		return nil, nil
	}
	key := &certpilotv1alpha1.PrivateKey{Algorithm: certpilotv1alpha1.KeyAlgorithmECDSA}
	if hasAlgorithm {
		switch strings.ToUpper(strings.TrimSpace(algorithm)) {
		case certpilotv1alpha1.KeyAlgorithmECDSA:
		case certpilotv1alpha1.KeyAlgorithmRSA:
			key.Algorithm = certpilotv1alpha1.KeyAlgorithmRSA
		default:
			return nil, fmt.Errorf("the annotation %s must be ECDSA or RSA, not %q", AnnotationPrivateKeyAlgorithm, algorithm)
		}
	}
	if hasSize {
		size, err := strconv.ParseInt(strings.TrimSpace(sizeValue), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("the annotation %s is not a number of bits: %q", AnnotationPrivateKeySize, sizeValue)
		}
		valid := map[string][]int64{
			certpilotv1alpha1.KeyAlgorithmECDSA: {256, 384},
			certpilotv1alpha1.KeyAlgorithmRSA:   {2048, 3072, 4096},
		}[key.Algorithm]
		if !slices.Contains(valid, size) {
			return nil, fmt.Errorf("the annotation %s: %s keys must be %s bits, not %d",
				AnnotationPrivateKeySize, key.Algorithm, joinInts(valid), size)
		}
		key.Size = int32(size)
	}
	return key, nil
}

// solverTypes counts the challenge types a solver sets.
func solverTypes(s *certpilotv1alpha1.Solver) int {
	n := 0
	for _, set := range []bool{s.TLSALPN01 != nil, s.HTTP01 != nil, s.DNS01 != nil} {
		if set {
			n++
		}
	}
	return n
}

func issuerAnnotation(kind string) string {
	if kind == "ClusterIssuer" {
		return AnnotationClusterIssuer
	}
	return AnnotationIssuer
}

func joinInts(values []int64) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = strconv.FormatInt(v, 10)
	}
	if len(parts) < 2 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
}
