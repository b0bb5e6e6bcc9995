package testenv

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	certpilotkube "github.com/certpilot/certpilot/internal/kube"
)

// CachedClient returns a client of kube that reads from informers, as the manager's client
// does: Certificates, Issuers, and only the Secrets labelled as certpilot's, whole only when a
// Certificate controls them (main.go's cache, kube.SecretCache), of namespaces (all when none). The informers are synced when it returns and stop when the
// test ends. With readYourWrites, a read waits until the informers have seen every write the
// client made before it (controller-runtime's EnableReadYourWritesConsistency).
func CachedClient(t testing.TB, kube *Kube, readYourWrites bool, namespaces ...string) client.Client {
	t.Helper()
	options := cache.Options{Scheme: kube.Scheme, ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: certpilotkube.SecretCache(),
	}}
	if len(namespaces) > 0 {
		options.DefaultNamespaces = map[string]cache.Config{}
		for _, namespace := range namespaces {
			options.DefaultNamespaces[namespace] = cache.Config{}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	informers, err := cache.New(kube.Config, options)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- informers.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("The informers stopped with an error: %v", err)
		}
	})
	// Start the informers a reconciler reads from before its first reconcile.
	for _, obj := range []client.Object{&certpilotv1alpha1.Certificate{}, &certpilotv1alpha1.Issuer{}, &corev1.Secret{}} {
		if _, err := informers.GetInformer(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	if !informers.WaitForCacheSync(ctx) {
		t.Fatal("The informers did not sync")
	}
	c, err := client.New(kube.Config, client.Options{Scheme: kube.Scheme, Cache: &client.CacheOptions{
		Reader: informers, EnableReadYourWritesConsistency: ptr.To(readYourWrites),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// SecretNames returns the names of the Secrets of namespaces (all when none) that the cache of
// CachedClient leaves out, as main.go's manager keeps them (kube.SecretNames), synced; it stops
// when the test ends.
func SecretNames(t testing.TB, kube *Kube, namespaces ...string) *certpilotkube.SecretNames {
	t.Helper()
	var config map[string]cache.Config
	if len(namespaces) > 0 {
		config = map[string]cache.Config{}
		for _, namespace := range namespaces {
			config[namespace] = cache.Config{}
		}
	}
	names, err := certpilotkube.NewSecretNames(kube.Config, cache.Options{Scheme: kube.Scheme}, config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- names.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("The Secret names' informer stopped with an error: %v", err)
		}
	})
	if !names.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("The Secret names' informer did not sync")
	}
	return names
}
