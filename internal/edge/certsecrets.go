package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
)

// CertificateSecretSelector selects certpilot's certificate Secrets: managed by certpilot,
// naming their Certificate, and not a claim Secret. Challenge Secrets and ACME account key
// Secrets, which certpilot also manages, do not match: the edge never caches an account key.
const CertificateSecretSelector = v1alpha1.LabelManagedBy + "=" + v1alpha1.ManagedByValue + "," +
	v1alpha1.LabelCertificate + ",!" + v1alpha1.LabelClaim

// CertificateSecretSource feeds a CertificateStore with the certificates that certpilot issued,
// from its certificate Secrets (tls.crt and tls.key, or bundle.pem) watched through the API with
// LabelSelector in each of Namespaces (empty: every namespace), together with the Certificates
// there.
//
// A Secret's certificate is served for a name only when a Certificate in the Secret's namespace
// controls the Secret (controller owner reference, by name and UID), lists the name in
// spec.dnsNames (or a wildcard covering it), and records the leaf's serial as issued in
// status.serialNumber; the key must be the leaf's; and HostNamespaces, when set, lets the
// Secret's namespace serve the name. Anything else is not served, logged once per
// Secret version and reason, and counted in certpilot_edge_certificates_refused_total. The
// manager writes a renewed Secret before the status: until the status names the new serial, the
// certificate the Secret held before (accepted earlier for the same Certificate) is served on.
//
// Claim Secrets are outside the selector; those that an older manager made without the claim
// label, and anything named like one, are kept in the cache without their data. Its RBAC needs
// get, list and watch on Secrets and on certificates.certpilot.dev in those namespaces.
type CertificateSecretSource struct {
	Client kubernetes.Interface
	// CertificateClient lists and watches Certificates (NewCertificateClient).
	CertificateClient rest.Interface
	Namespaces        []string
	// LabelSelector defaults to CertificateSecretSelector.
	LabelSelector string
	Store         *CertificateStore
	// HostNamespaces, when set, limits the namespaces each name is served from.
	HostNamespaces *HostNamespaces
	// Metrics, when set, counts refusals and the Secrets held (certpilot_edge_cached_secrets).
	Metrics *Metrics
	Log     logr.Logger

	mu      sync.Mutex
	secrets map[string]*secretState // by namespace/name
	issuers map[string]issuer       // by namespace/name
	synced  bool
}

// secretState is what the source holds of one certificate Secret.
type secretState struct {
	namespace       string
	resourceVersion string
	// owner is the Secret's controller owner reference (nil: none).
	owner *metav1.OwnerReference
	// certificate is the Secret's certificate (nil: none, or invalid).
	certificate *tls.Certificate
	invalid     error
	// accepted is the last certificate of this Secret that was served, and acceptedOwner the
	// controller reference it was served under: served on while the Secret's current content is
	// refused (a renewal written before the status records it).
	accepted      *tls.Certificate
	acceptedOwner *metav1.OwnerReference
	// refusal and refusalVersion are the reason last logged for this Secret and the
	// resourceVersion it was logged for, so that each is logged and counted once.
	refusal, refusalVersion string
}

// NewCertificateSecretSource returns a source of the certificate Secrets and Certificates in
// namespaces (empty: all), reached with config, and registers it with store, so that store is
// not Synced before the source has listed.
func NewCertificateSecretSource(config *rest.Config, namespaces []string, store *CertificateStore, metrics *Metrics, log logr.Logger) (*CertificateSecretSource, error) {
	client, err := kubernetes.NewForConfig(kube.Protobuf(config))
	if err != nil {
		return nil, fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	certificateClient, err := NewCertificateClient(config)
	if err != nil {
		return nil, err
	}
	store.Expect(certificateSetSecrets)
	return &CertificateSecretSource{
		Client: client, CertificateClient: certificateClient, Namespaces: namespaces, Store: store, Metrics: metrics, Log: log,
	}, nil
}

// NewCertificateClient returns a REST client for certpilot's API group, enough to list and
// watch Certificates.
func NewCertificateClient(config *rest.Config) (rest.Interface, error) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	config = rest.CopyConfig(config)
	config.GroupVersion = &v1alpha1.GroupVersion
	config.APIPath = "/apis"
	config.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if config.UserAgent == "" {
		config.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	client, err := rest.RESTClientFor(config)
	if err != nil {
		return nil, fmt.Errorf("creating the Certificate client: %w", err)
	}
	return client, nil
}

// Run watches the Secrets and Certificates until ctx is done. The store's set is replaced after
// the initial lists and after every change; it returns nil when ctx is done.
func (s *CertificateSecretSource) Run(ctx context.Context) error {
	if s.Client == nil || s.CertificateClient == nil || s.Store == nil {
		return errors.New("certificate secret source needs clients and a store")
	}
	selector := s.LabelSelector
	if selector == "" {
		selector = CertificateSecretSelector
	}
	namespaces := s.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	s.Store.Expect(certificateSetSecrets)
	s.mu.Lock()
	s.secrets, s.issuers, s.synced = map[string]*secretState{}, map[string]issuer{}, false
	s.mu.Unlock()

	var synced []cache.InformerSynced
	for _, namespace := range namespaces {
		secrets := cache.NewSharedIndexInformerWithOptions(
			cache.NewFilteredListWatchFromClient(s.Client.CoreV1().RESTClient(), "secrets", namespace,
				func(options *metav1.ListOptions) { options.LabelSelector = selector }),
			&corev1.Secret{}, cache.SharedIndexInformerOptions{ObjectDescription: "certificate Secrets in " + displayNamespace(namespace)})
		if err := secrets.SetTransform(trimSecret); err != nil {
			return err
		}
		certificates := cache.NewSharedIndexInformerWithOptions(
			cache.NewListWatchFromClient(s.CertificateClient, "certificates", namespace, fields.Everything()),
			&v1alpha1.Certificate{}, cache.SharedIndexInformerOptions{ObjectDescription: "Certificates in " + displayNamespace(namespace)})
		if err := certificates.SetTransform(trimCertificate); err != nil {
			return err
		}
		for _, handler := range []struct {
			informer cache.SharedIndexInformer
			handler  cache.ResourceEventHandler
		}{
			{secrets, cache.ResourceEventHandlerFuncs{
				AddFunc: s.updateSecret, UpdateFunc: func(_, obj any) { s.updateSecret(obj) }, DeleteFunc: s.deleteSecret,
			}},
			{certificates, cache.ResourceEventHandlerFuncs{
				AddFunc: s.updateCertificate, UpdateFunc: func(_, obj any) { s.updateCertificate(obj) }, DeleteFunc: s.deleteCertificate,
			}},
		} {
			registration, err := handler.informer.AddEventHandler(handler.handler)
			if err != nil {
				return fmt.Errorf("watching certificates in %s: %w", displayNamespace(namespace), err)
			}
			synced = append(synced, registration.HasSynced)
			go handler.informer.RunWithContext(ctx)
		}
	}
	if cache.WaitForCacheSync(ctx.Done(), synced...) {
		s.mu.Lock()
		s.synced = true
		s.publishLocked()
		secrets, issuers := len(s.secrets), len(s.issuers)
		s.mu.Unlock()
		s.Log.Info("Synced the certificate Secrets", "namespaces", namespaces, "secrets", secrets, "certificates", issuers)
	}
	<-ctx.Done()
	return nil
}

func displayNamespace(namespace string) string {
	if namespace == metav1.NamespaceAll {
		return "all namespaces"
	}
	return "namespace " + namespace
}

// trimSecret is the Secret informer's transform: it drops what the edge never reads before
// the informer caches a Secret, and the data of a claim Secret (or one named like it) whole.
func trimSecret(obj any) (any, error) {
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	secret.ManagedFields = nil
	if isClaimSecret(secret.Name, secret.Labels, secret.Annotations) {
		secret.Data, secret.StringData = nil, nil
	}
	return secret, nil
}

// trimCertificate is the Certificate informer's transform: it keeps what judgeSecret reads.
func trimCertificate(obj any) (any, error) {
	cert, ok := obj.(*v1alpha1.Certificate)
	if !ok {
		return obj, nil
	}
	return &v1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: cert.Namespace, Name: cert.Name, UID: cert.UID, ResourceVersion: cert.ResourceVersion,
		},
		Spec:   v1alpha1.CertificateSpec{DNSNames: cert.Spec.DNSNames, IPAddresses: cert.Spec.IPAddresses},
		Status: v1alpha1.CertificateStatus{SerialNumber: cert.Status.SerialNumber},
	}, nil
}

// updateSecret parses one Secret's certificate.
func (s *CertificateSecretSource) updateSecret(obj any) {
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	key := secret.Namespace + "/" + secret.Name
	if isClaimSecret(secret.Name, secret.Labels, secret.Annotations) {
		s.Log.V(1).Info("Ignored a claim Secret", "secret", key)
		s.forgetSecret(key)
		return
	}
	certificate, found, err := certificateFromFiles(secret.Data)
	if !found {
		s.Log.V(1).Info("Ignored a Secret without a certificate", "secret", key, "resourceVersion", secret.ResourceVersion)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	state := s.secrets[key]
	if state == nil {
		state = &secretState{namespace: secret.Namespace}
		s.secrets[key] = state
	}
	state.resourceVersion = secret.ResourceVersion
	state.owner = metav1.GetControllerOf(secret)
	state.certificate, state.invalid = certificate, err
	if err != nil {
		state.certificate = nil
	}
	s.publishLocked()
}

func (s *CertificateSecretSource) deleteSecret(obj any) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	if secret, ok := obj.(*corev1.Secret); ok {
		s.forgetSecret(secret.Namespace + "/" + secret.Name)
	}
}

func (s *CertificateSecretSource) forgetSecret(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, had := s.secrets[key]; had {
		delete(s.secrets, key)
		s.publishLocked()
	}
}

func (s *CertificateSecretSource) updateCertificate(obj any) {
	cert, ok := obj.(*v1alpha1.Certificate)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issuers[cert.Namespace+"/"+cert.Name] = newIssuer(cert)
	s.publishLocked()
}

func (s *CertificateSecretSource) deleteCertificate(obj any) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	cert, ok := obj.(*v1alpha1.Certificate)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.issuers, cert.Namespace+"/"+cert.Name)
	s.publishLocked()
}

// publishLocked judges every Secret against the Certificates and, once synced, gives the store
// what may be served. The caller holds mu.
func (s *CertificateSecretSource) publishLocked() {
	s.Metrics.setCachedSecrets(len(s.secrets))
	if !s.synced {
		return
	}
	var served []ServedCertificate
	for _, key := range slices.Sorted(maps.Keys(s.secrets)) {
		state := s.secrets[key]
		if state.certificate == nil && state.invalid == nil {
			continue // no certificate data: nothing to serve, nothing refused
		}
		names, reason := judgeSecret(state.namespace, state.owner, state.certificate, s.issuers, s.HostNamespaces, true)
		if reason == "" {
			if state.accepted != state.certificate {
				s.Log.Info("Serving a certificate Secret", "secret", key, "resourceVersion", state.resourceVersion, "dnsNames", names,
					"serial", fmt.Sprintf("%x", state.certificate.Leaf.SerialNumber), "notAfter", state.certificate.Leaf.NotAfter)
			}
			state.accepted, state.acceptedOwner = state.certificate, state.owner
			state.refusal = ""
			served = append(served, ServedCertificate{Certificate: state.certificate, Names: names})
			continue
		}
		servingPrevious := false
		if state.accepted != nil {
			// The certificate served before, still controlled by the same Certificate and
			// covered by its names: the status may not name the new serial yet.
			if names, previous := judgeSecret(state.namespace, state.acceptedOwner, state.accepted, s.issuers, s.HostNamespaces, false); previous == "" {
				served = append(served, ServedCertificate{Certificate: state.accepted, Names: names})
				servingPrevious = true
			}
		}
		s.refuseLocked(key, state, reason, servingPrevious)
	}
	s.Store.ReplaceServed(certificateSetSecrets, served)
}

// refuseLocked logs and counts a refusal once per Secret version and reason.
func (s *CertificateSecretSource) refuseLocked(key string, state *secretState, reason string, servingPrevious bool) {
	if state.refusal == reason && state.refusalVersion == state.resourceVersion {
		return
	}
	state.refusal, state.refusalVersion = reason, state.resourceVersion
	s.Metrics.refuseCertificate(reason)
	log := s.Log.WithValues("secret", key, "resourceVersion", state.resourceVersion, "reason", reason,
		"servingPrevious", servingPrevious)
	if state.certificate != nil {
		log = log.WithValues("dnsNames", state.certificate.Leaf.DNSNames, "serial", fmt.Sprintf("%x", state.certificate.Leaf.SerialNumber))
	}
	if state.owner != nil {
		log = log.WithValues("owner", state.owner.Kind+"/"+state.owner.Name, "ownerUID", string(state.owner.UID))
	}
	if state.invalid != nil {
		log.Error(state.invalid, "Refused to serve a certificate Secret")
		return
	}
	log.Info("Refused to serve a certificate Secret")
}
