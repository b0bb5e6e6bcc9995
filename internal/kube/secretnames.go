package kube

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// SecretNames knows which Secrets exist that the manager's cache leaves out (SecretCache holds
// only those labelled as certpilot's): an informer of their names alone, watched as metadata
// (the apiserver sends no data) and kept as name, namespace and UID. Before a first issuance
// the controller asks whether a Secret of the certificate Secret's or the claim's name exists
// that is not certpilot's, so that it stops before ordering rather than after; with SecretNames
// a name in neither cache is answered without a request. The answer can lag the API by a watch
// event, as a read of the apiserver's watch cache can: the create that follows fails if a
// Secret of that name appeared since.
//
// SecretNames is a manager Runnable whose informer the manager syncs before its controllers
// start (GetCache).
type SecretNames struct {
	cache cache.Cache
}

// NewSecretNames builds SecretNames for the Secrets of namespaces (all when empty) that are
// not labelled as certpilot's.
func NewSecretNames(config *rest.Config, options cache.Options, namespaces map[string]cache.Config) (*SecretNames, error) {
	options.DefaultNamespaces = namespaces
	options.DefaultLabelSelector = UnmanagedSecretSelector()
	options.DefaultTransform = nameOnly
	options.ByObject = nil
	informers, err := cache.New(config, options)
	if err != nil {
		return nil, err
	}
	// Registered now, so that Start runs the informer and WaitForCacheSync waits for it.
	if _, err := informers.GetInformer(context.Background(), secretMetadata()); err != nil {
		return nil, err
	}
	return &SecretNames{cache: informers}, nil
}

// UnmanagedSecretSelector selects the Secrets not labelled as certpilot's: the complement of
// SecretCacheSelector but for the challenge shards, which are certpilot's and which no
// Certificate may name (the store reads the API before its write and refuses them).
func UnmanagedSecretSelector() labels.Selector {
	unmanaged, err := labels.NewRequirement(certpilotv1alpha1.LabelManagedBy, selection.NotIn, []string{certpilotv1alpha1.ManagedByValue})
	if err != nil {
		panic(err)
	}
	return labels.NewSelector().Add(*unmanaged)
}

func secretMetadata() *metav1.PartialObjectMetadata {
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return meta
}

// nameOnly keeps of a Secret's metadata what SecretNames answers from.
var nameOnly toolscache.TransformFunc = func(obj any) (any, error) {
	meta, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{
		TypeMeta:   meta.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: meta.Name, Namespace: meta.Namespace, UID: meta.UID, ResourceVersion: meta.ResourceVersion},
	}, nil
}

// Start runs the informer until ctx ends.
func (n *SecretNames) Start(ctx context.Context) error { return n.cache.Start(ctx) }

// GetCache is the informer's cache: the manager waits for it to sync before starting the
// controllers.
func (n *SecretNames) GetCache() cache.Cache { return n.cache }

// Exists reports whether a Secret not labelled as certpilot's has the name key.
func (n *SecretNames) Exists(ctx context.Context, key types.NamespacedName) (bool, error) {
	err := n.cache.Get(ctx, key, secretMetadata())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// LookUpSecret reads into secret the Secret key that the manager's cache does not hold: from
// the apiserver's watch cache when names says a Secret of that name that is not certpilot's
// exists, or when there is no names; NotFound, without a request, when names knows of none.
// A Secret labelled as certpilot's that the manager's cache has not seen yet is NotFound too:
// the create that follows fails if it exists.
func LookUpSecret(ctx context.Context, names *SecretNames, reader client.Reader, key types.NamespacedName, secret *corev1.Secret) error {
	if names != nil {
		exists, err := names.Exists(ctx, key)
		if err != nil {
			return err
		}
		if !exists {
			return apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
		}
	}
	return reader.Get(ctx, key, secret, FromWatchCache)
}
