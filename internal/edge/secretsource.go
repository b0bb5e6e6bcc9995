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

// SecretSource feeds a ChallengeStore from one challenge Secret, watched through the API.
//
// Its informer lists and watches with the field selector metadata.name=<Name> in Namespace, so
// it caches that one Secret and never the other Secrets of the namespace; its RBAC needs only
// get, list and watch on Secrets in Namespace (the list and watch carry the selector).
type SecretSource struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	Store     *ChallengeStore
	Log       logr.Logger
}

// Run watches the Secret until ctx is done and feeds every state of it to the store: its data
// when it is added or updated, an empty store when it is deleted. It marks the store synced once
// the initial list has been delivered, whether or not the Secret exists. It returns nil when ctx
// is done, or an error when the source cannot start.
func (s *SecretSource) Run(ctx context.Context) error {
	if s.Client == nil || s.Store == nil || s.Namespace == "" || s.Name == "" {
		return errors.New("secret source needs a client, a store, a namespace and a name")
	}
	log := s.Log.WithValues("secret", s.Namespace+"/"+s.Name)

	selector := fields.OneTermEqualSelector("metadata.name", s.Name).String()
	listWatch := cache.NewFilteredListWatchFromClient(s.Client.CoreV1().RESTClient(), "secrets", s.Namespace,
		func(options *metav1.ListOptions) { options.FieldSelector = selector })
	informer := cache.NewSharedIndexInformerWithOptions(listWatch, &corev1.Secret{}, cache.SharedIndexInformerOptions{
		ObjectDescription: "challenge Secret " + s.Namespace + "/" + s.Name,
	})

	// The informer calls the handler from one goroutine, in order, so the store sees the
	// Secret's states in the order the apiserver produced them.
	registration, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.apply(log, obj) },
		UpdateFunc: func(_, obj any) { s.apply(log, obj) },
		DeleteFunc: func(any) {
			// A tombstone (DeletedFinalStateUnknown) means the same: the Secret is gone.
			s.Store.Clear()
			log.Info("Cleared the challenge responses: the challenge Secret was deleted")
		},
	})
	if err != nil {
		return fmt.Errorf("watching challenge Secret %s/%s: %w", s.Namespace, s.Name, err)
	}

	go informer.RunWithContext(ctx)
	if cache.WaitFor(ctx, "", registration.HasSyncedChecker()) {
		// The initial list was delivered: the store now holds the Secret, or the Secret does
		// not exist yet and the empty store is the truth.
		s.Store.MarkSynced()
		log.Info("Synced the challenge Secret")
	}
	<-ctx.Done()
	return nil
}

// apply replaces the store's content with the Secret's data.
func (s *SecretSource) apply(log logr.Logger, obj any) {
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		log.Error(fmt.Errorf("unexpected object %T", obj), "Ignored an informer event")
		return
	}
	changed, err := s.Store.Replace(secret.Data)
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
	log.Info("Loaded the challenge Secret")
}
