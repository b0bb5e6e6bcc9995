package kube

import (
	"bytes"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// SecretCache is how the manager caches Secrets. The apiserver sends only Secrets labelled as
// certpilot's (LabelManagedBy), except the load balancers' challenge shards: the shard writer
// keeps its own copy from its writes' responses, and every write of a shard would come back
// whole through the watch. A label is no proof of ownership (anyone who may create a Secret
// may set it), so SecretCacheTransform keeps whole only the Secrets a Certificate controls and
// reduces every other to the metadata certpilot's watches look at.
func SecretCache() cache.ByObject {
	return cache.ByObject{Label: SecretCacheSelector(), Transform: SecretCacheTransform()}
}

// SecretCacheSelector selects the Secrets the manager caches: certpilot's (LabelManagedBy),
// except the challenge shards of load balancers.
func SecretCacheSelector() labels.Selector {
	managed, err := labels.NewRequirement(certpilotv1alpha1.LabelManagedBy, selection.Equals, []string{certpilotv1alpha1.ManagedByValue})
	if err != nil {
		panic(err)
	}
	notChallenges, err := labels.NewRequirement(certpilotv1alpha1.LabelChallenges, selection.DoesNotExist, nil)
	if err != nil {
		panic(err)
	}
	return labels.NewSelector().Add(*managed, *notChallenges)
}

// ControlledByCertificate reports whether a Certificate is obj's controller: certpilot's
// certificate and claim Secrets, the only Secrets whose data the manager's cache holds.
func ControlledByCertificate(obj metav1.Object) bool {
	owner := metav1.GetControllerOf(obj)
	if owner == nil || owner.Kind != "Certificate" {
		return false
	}
	group, err := schema.ParseGroupVersion(owner.APIVersion)
	return err == nil && group.Group == certpilotv1alpha1.GroupVersion.Group
}

// SecretCacheTransform is the manager cache's transform for Secrets.
//
// A Secret that no Certificate controls (an account key, which is read from the API, or a
// Secret anyone labelled as certpilot's) is kept as metadata only: name, namespace, UID,
// resourceVersion, type, certpilot's labels and its controller reference; no data, no
// annotations. What a Secret of a tenant's holds never enters the manager's memory, however
// large, and a reader that finds such a Secret in the cache reads the API when it needs more
// (ControlledByCertificate tells the two apart).
//
// A Secret a Certificate controls loses its managedFields, as the cache's default transform
// strips them from every kind (nothing reads them from the cache), and the values a certificate
// Secret repeats share memory:
//
//   - bundle.pem is tls.key, a newline when the key lacks one, then tls.crt (pki.Bundle): when
//     it is exactly that, tls.key and tls.crt become slices of bundle.pem's bytes;
//   - ca.crt is the same for every certificate from one CA: identical values share one copy.
//
// Every value stays byte for byte what the API holds, so a reader of the cache sees no
// difference; at 10,000 certificates this keeps about 4 KiB per Secret out of the heap. Objects
// in the cache are never modified (readers get deep copies), so the sharing is safe.
func SecretCacheTransform() toolscache.TransformFunc {
	shared := &sharedValues{values: map[string][]byte{}}
	return func(obj any) (any, error) {
		secret, ok := obj.(*corev1.Secret)
		if !ok {
			return obj, nil
		}
		if !ControlledByCertificate(secret) {
			return metadataOnly(secret), nil
		}
		secret.ManagedFields = nil
		shareObjectMeta(&secret.ObjectMeta, secretRepeatingValues)
		secret.Type = corev1.SecretType(cacheStrings.get(string(secret.Type)))
		for key, value := range secret.Data {
			secret.Data[cacheStrings.get(key)] = value // the same entry, with the shared key
		}
		shareCertificateSecretData(secret, shared)
		return secret, nil
	}
}

// cachedLabels are the labels a Secret kept as metadata only keeps: those certpilot's watches
// and selectors read. A fixed list, so a Secret with thousands of labels costs no more.
var cachedLabels = []string{
	certpilotv1alpha1.LabelManagedBy, certpilotv1alpha1.LabelCertificate, certpilotv1alpha1.LabelClaim,
	certpilotv1alpha1.LabelChallenges, certpilotv1alpha1.LabelLoadBalancer,
}

// metadataOnly is what the cache keeps of a Secret no Certificate controls.
func metadataOnly(secret *corev1.Secret) *corev1.Secret {
	kept := &corev1.Secret{
		TypeMeta: secret.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: secret.Name, Namespace: secret.Namespace, UID: secret.UID, ResourceVersion: secret.ResourceVersion,
			CreationTimestamp: secret.CreationTimestamp, DeletionTimestamp: secret.DeletionTimestamp,
		},
		Type: corev1.SecretType(cacheStrings.get(string(secret.Type))),
	}
	for _, key := range cachedLabels {
		if value, ok := secret.Labels[key]; ok {
			if kept.Labels == nil {
				kept.Labels = map[string]string{}
			}
			kept.Labels[key] = value
		}
	}
	if owner := metav1.GetControllerOf(secret); owner != nil {
		kept.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	shareObjectMeta(&kept.ObjectMeta, secretRepeatingValues)
	return kept
}

// shareCertificateSecretData makes the repeated values of a certificate Secret share memory.
func shareCertificateSecretData(secret *corev1.Secret, shared *sharedValues) {
	if secret.Type != corev1.SecretTypeTLS || secret.Data == nil {
		return
	}
	if ca := secret.Data[corev1.ServiceAccountRootCAKey]; len(ca) > 0 {
		secret.Data[corev1.ServiceAccountRootCAKey] = shared.get(ca)
	}
	bundle, key, chain := secret.Data[certpilotv1alpha1.BundleKey], secret.Data[corev1.TLSPrivateKeyKey], secret.Data[corev1.TLSCertKey]
	if len(bundle) == 0 || len(key) == 0 || len(chain) == 0 || !bytes.HasPrefix(bundle, key) || !bytes.HasSuffix(bundle, chain) {
		return
	}
	separator := len(bundle) - len(key) - len(chain)
	if separator != 0 && (separator != 1 || bundle[len(key)] != '\n') {
		return
	}
	// Full slice expressions: an append to one value can never write into the next.
	secret.Data[corev1.TLSPrivateKeyKey] = bundle[:len(key):len(key)]
	secret.Data[corev1.TLSCertKey] = bundle[len(key)+separator : len(bundle) : len(bundle)]
}

// maxSharedValues bounds sharedValues: a cluster has a few CAs, not thousands; past the bound
// values are kept as they are.
const maxSharedValues = 16

// sharedValues hands out one copy of each value it was given (the transforms of several
// informers, one per watched namespace, may call it at once).
type sharedValues struct {
	mu     sync.Mutex
	values map[string][]byte
}

// get returns the copy of value first given, or value itself. Callers never modify the result.
func (s *sharedValues) get(value []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if first, ok := s.values[string(value)]; ok {
		return first
	}
	if len(s.values) < maxSharedValues {
		s.values[string(value)] = value[:len(value):len(value)]
	}
	return value
}

// CertificateCache is how the manager caches Certificates: whole, but for managedFields, with
// the strings that repeat across Certificates shared (CertificateCacheTransform).
func CertificateCache() cache.ByObject {
	return cache.ByObject{Transform: CertificateCacheTransform()}
}

// CertificateCacheTransform is the manager cache's transform for Certificates. It strips
// managedFields, as the cache's default transform does for every kind (nothing reads them from
// the cache), and makes the strings that repeat from one Certificate to the next share one copy
// (shareCertificate). Every field stays what the API holds.
func CertificateCacheTransform() toolscache.TransformFunc {
	return func(obj any) (any, error) {
		cert, ok := obj.(*certpilotv1alpha1.Certificate)
		if !ok {
			return obj, nil
		}
		cert.ManagedFields = nil
		shareCertificate(cert)
		return cert, nil
	}
}

// secretRepeatingValues are the label and annotation keys of certpilot's Secrets whose values
// repeat across Secrets: certpilot's labels but the Certificate's name, and the annotations
// naming the issuer, the ACME server and account, whether a certificate was renewed, the key
// revision of a claim and the keys a secretTemplate added (the controllers' annotationIssuerKind,
// annotationIssuerName, annotationACMEServer, annotationACMEAccount, annotationRenewed,
// annotationKeyRevision, annotationTemplateKeys). The values of other keys (the Certificate's
// name, the order's URL, the open order) differ from one Secret to the next and are left alone.
var secretRepeatingValues = map[string]bool{
	certpilotv1alpha1.LabelManagedBy: true, certpilotv1alpha1.LabelClaim: true,
	certpilotv1alpha1.LabelChallenges: true, certpilotv1alpha1.LabelLoadBalancer: true,
	"certpilot.dev/issuer-kind": true, "certpilot.dev/issuer-name": true,
	"certpilot.dev/acme-server": true, "certpilot.dev/acme-account": true,
	"certpilot.dev/renewed": true, "certpilot.dev/key-revision": true, "certpilot.dev/secret-template-keys": true,
}

// shareObjectMeta makes the strings of meta that repeat across objects share one copy: the
// namespace, the keys of labels and annotations, the values of repeatingValues' keys, the
// owners' apiVersion and kind, and finalizers. Names, UIDs and resourceVersions are left alone.
func shareObjectMeta(meta *metav1.ObjectMeta, repeatingValues map[string]bool) {
	meta.Namespace = cacheStrings.get(meta.Namespace)
	shareMap(meta.Labels, repeatingValues)
	shareMap(meta.Annotations, repeatingValues)
	for i := range meta.OwnerReferences {
		owner := &meta.OwnerReferences[i]
		owner.APIVersion, owner.Kind = cacheStrings.get(owner.APIVersion), cacheStrings.get(owner.Kind)
	}
	for i, finalizer := range meta.Finalizers {
		meta.Finalizers[i] = cacheStrings.get(finalizer)
	}
}

// shareMap makes m's keys, and the values of repeatingValues' keys, share one copy. Assigning
// to an entry that exists stores the key given, so the map is changed in place.
func shareMap(m map[string]string, repeatingValues map[string]bool) {
	for key, value := range m {
		if repeatingValues[key] {
			value = cacheStrings.get(value)
		}
		m[cacheStrings.get(key)] = value
	}
}

// shareCertificate makes the strings of a Certificate that repeat across Certificates share one
// copy: its metadata's (shareObjectMeta; no annotation value), the issuer references, the key
// algorithm, the solvers' settings, the inject targets' kinds and rollouts, the output formats,
// and in its status the conditions' type, status and reason, the issuers, where the renewal time
// came from, and the order's and challenges' states and types. What names or describes one
// Certificate (secretName, DNS names, messages, serial number, URLs, tokens) is left alone.
func shareCertificate(cert *certpilotv1alpha1.Certificate) {
	shareObjectMeta(&cert.ObjectMeta, nil)
	spec, status := &cert.Spec, &cert.Status
	shareIssuerRef(&spec.IssuerRef)
	for i := range spec.FallbackIssuerRefs {
		shareIssuerRef(&spec.FallbackIssuerRefs[i])
	}
	if spec.PrivateKey != nil {
		spec.PrivateKey.Algorithm = cacheStrings.get(spec.PrivateKey.Algorithm)
	}
	if spec.Solver != nil {
		shareSolver(spec.Solver)
	}
	for i := range spec.Solvers {
		shareSolver(&spec.Solvers[i].Solver)
	}
	for i := range spec.Inject {
		target := &spec.Inject[i]
		target.Kind, target.Rollout = cacheStrings.get(target.Kind), cacheStrings.get(target.Rollout)
	}
	for i := range spec.AdditionalOutputFormats {
		spec.AdditionalOutputFormats[i].Type = cacheStrings.get(spec.AdditionalOutputFormats[i].Type)
	}
	for i := range status.Conditions {
		condition := &status.Conditions[i]
		condition.Type, condition.Reason = cacheStrings.get(condition.Type), cacheStrings.get(condition.Reason)
		condition.Status = metav1.ConditionStatus(cacheStrings.get(string(condition.Status)))
	}
	status.RenewalTimeSource = cacheStrings.get(status.RenewalTimeSource)
	if status.IssuerRef != nil {
		shareIssuerRef(status.IssuerRef)
	}
	if current := status.CurrentIssuer; current != nil {
		current.Kind, current.Name, current.Reason = cacheStrings.get(current.Kind), cacheStrings.get(current.Name), cacheStrings.get(current.Reason)
	}
	if order := status.Order; order != nil {
		order.State = cacheStrings.get(order.State)
		for i := range order.Challenges {
			challenge := &order.Challenges[i]
			challenge.Type, challenge.State = cacheStrings.get(challenge.Type), cacheStrings.get(challenge.State)
		}
	}
	for i := range status.Injected {
		status.Injected[i].Kind = cacheStrings.get(status.Injected[i].Kind)
	}
}

func shareIssuerRef(ref *certpilotv1alpha1.IssuerReference) {
	ref.Kind, ref.Name = cacheStrings.get(ref.Kind), cacheStrings.get(ref.Name)
}

// shareSolver makes a solver's settings share one copy: the same load balancer or DNS server
// serves many Certificates.
func shareSolver(solver *certpilotv1alpha1.Solver) {
	if tls := solver.TLSALPN01; tls != nil {
		shareLoadBalancer(&tls.LoadBalancer, &tls.ProbeAddress)
	}
	if http := solver.HTTP01; http != nil {
		shareLoadBalancer(&http.LoadBalancer, &http.ProbeAddress)
	}
	dns := solver.DNS01
	if dns == nil {
		return
	}
	for i, nameserver := range dns.Nameservers {
		dns.Nameservers[i] = cacheStrings.get(nameserver)
	}
	dns.CNAMEStrategy = cacheStrings.get(dns.CNAMEStrategy)
	if rfc := dns.RFC2136; rfc != nil {
		rfc.Nameserver, rfc.TSIGKeyName, rfc.TSIGAlgorithm = cacheStrings.get(rfc.Nameserver), cacheStrings.get(rfc.TSIGKeyName), cacheStrings.get(rfc.TSIGAlgorithm)
		rfc.TSIGSecretRef.Name, rfc.TSIGSecretRef.Key = cacheStrings.get(rfc.TSIGSecretRef.Name), cacheStrings.get(rfc.TSIGSecretRef.Key)
	}
}

func shareLoadBalancer(ref *certpilotv1alpha1.LoadBalancerRef, probeAddress *string) {
	ref.Name, ref.Namespace, *probeAddress = cacheStrings.get(ref.Name), cacheStrings.get(ref.Namespace), cacheStrings.get(*probeAddress)
}

// maxCacheStrings bounds cacheStrings. The strings the transforms share come from a small
// vocabulary (keys, kinds, states, issuers, namespaces, solver settings); past the bound, new
// strings are kept as they are.
const maxCacheStrings = 4096

// cacheStrings holds one copy of each string the cache transforms share, for all informers (the
// Secrets and Certificates of one namespace share its name). Entries stay for the process's
// life: Go's unique package would let an entry go as soon as no handle refers to it, and the
// strings it hands out are no handles, so a string interned before a collection would not be
// shared with one interned after it.
var cacheStrings = &stringTable{values: map[string]string{}, max: maxCacheStrings}

// stringTable hands out one copy of each string it was given (the transforms of several
// informers may call it at once).
type stringTable struct {
	mu     sync.Mutex
	values map[string]string
	max    int
}

// get returns the copy of s first given, or s itself when the table is full.
func (t *stringTable) get(s string) string {
	if s == "" {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if first, ok := t.values[s]; ok {
		return first
	}
	if len(t.values) >= t.max {
		return s
	}
	s = strings.Clone(s) // a copy of its own, never part of a larger decoded buffer
	t.values[s] = s
	return s
}
