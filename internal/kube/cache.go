package kube

import (
	"bytes"
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
		Type: secret.Type,
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
