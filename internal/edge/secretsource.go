package edge

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// SecretSource feeds a ChallengeStore from challenge Secrets watched through the API: the load
// balancer's challenge shards and the single Secret of earlier versions (see
// api/v1alpha1/contract.go); each is one part of the store.
//
// One informer per Secret lists and watches with the field selector metadata.name=<name> in
// Namespace, so it caches those Secrets and never the other Secrets of the namespace (which may
// hold account keys); its RBAC needs only get, list and watch on Secrets in Namespace, limited to
// those names (the list and watch carry the selector).
type SecretSource struct {
	Client    kubernetes.Interface
	Namespace string
	// Names are the Secrets to watch.
	Names []string
	Store *ChallengeStore
	Log   logr.Logger
}

// Run watches the Secrets until ctx is done and feeds every state of each to its part of the
// store: its data when it is added or updated, nothing when it is deleted. It marks the store
// synced once every initial list has been delivered, whether or not the Secrets exist. It
// returns nil when ctx is done, or an error when the source cannot start.
func (s *SecretSource) Run(ctx context.Context) error {
	if s.Client == nil || s.Store == nil || s.Namespace == "" || len(s.Names) == 0 {
		return errors.New("secret source needs a client, a store, a namespace and Secret names")
	}
	var synced []cache.InformerSynced
	for _, name := range s.Names {
		registration, err := s.watch(ctx, name)
		if err != nil {
			return err
		}
		synced = append(synced, registration.HasSynced)
	}
	if cache.WaitForCacheSync(ctx.Done(), synced...) {
		// Every initial list was delivered: the store now holds the Secrets that exist, and
		// the empty parts of those that do not are the truth.
		s.Store.MarkSynced()
		s.Log.Info("Synced the challenge Secrets", "namespace", s.Namespace, "count", len(s.Names))
	}
	<-ctx.Done()
	return nil
}

func (s *SecretSource) watch(ctx context.Context, name string) (cache.ResourceEventHandlerRegistration, error) {
	log := s.Log.WithValues("secret", s.Namespace+"/"+name)
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	listWatch := cache.NewFilteredListWatchFromClient(s.Client.CoreV1().RESTClient(), "secrets", s.Namespace,
		func(options *metav1.ListOptions) { options.FieldSelector = selector })
	informer := cache.NewSharedIndexInformerWithOptions(listWatch, &corev1.Secret{}, cache.SharedIndexInformerOptions{
		ObjectDescription: "challenge Secret " + s.Namespace + "/" + name,
	})
	// The informer calls the handler from one goroutine, in order, so the store sees the
	// Secret's states in the order the apiserver produced them.
	registration, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.apply(log, name, obj) },
		UpdateFunc: func(_, obj any) { s.apply(log, name, obj) },
		DeleteFunc: func(any) {
			// A tombstone (DeletedFinalStateUnknown) means the same: the Secret is gone.
			s.Store.ClearPart(name)
			log.V(1).Info("Cleared the challenge responses of a deleted challenge Secret")
		},
	})
	if err != nil {
		return nil, fmt.Errorf("watching challenge Secret %s/%s: %w", s.Namespace, name, err)
	}
	go informer.RunWithContext(ctx)
	return registration, nil
}

// apply replaces the Secret's part of the store with its data.
func (s *SecretSource) apply(log logr.Logger, name string, obj any) {
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		log.Error(fmt.Errorf("unexpected object %T", obj), "Ignored an informer event")
		return
	}
	changed, err := s.Store.ReplacePart(name, secret.Data)
	if !changed {
		return
	}
	tlsALPN01, http01 := s.Store.Len()
	log = log.WithValues("resourceVersion", secret.ResourceVersion, "tlsALPN01", tlsALPN01, "http01", http01)
	if err != nil {
		// Bad entries are skipped, the good ones are served.
		log.Error(err, "Loaded the challenge Secret with bad entries skipped")
		return
	}
	log.V(1).Info("Loaded the challenge Secret")
}
