package reliability

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	cpkube "github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/testenv"
)

const foreignFinalizer = "example.com/keep"

// TestFaultsFinalizerPatchKeepsOthers: certpilot's finalizer patch is made from a copy read
// before another controller added its finalizer. It must fail with a conflict (and the next
// reconcile retry), never drop the other finalizer as a plain merge patch of the list would.
func TestFaultsFinalizerPatchKeepsOthers(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	namespace := testenv.Namespace(t, "rel-finalizer")
	if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "race", Namespace: namespace},
		Spec: certpilotv1alpha1.CertificateSpec{DNSNames: []string{"race.test"}, SecretName: "race-tls",
			IssuerRef: certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "none"}},
	}
	if err := kubeClient().Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	stale := cert.DeepCopy()
	// The other controller adds its finalizer after certpilot read the object.
	if err := addFinalizer(ctx, client.ObjectKeyFromObject(cert), foreignFinalizer); err != nil {
		t.Fatal(err)
	}
	err := cpkube.SetFinalizer(ctx, kubeClient(), stale, "certpilot.dev/challenge-cleanup", true)
	if !apierrors.IsConflict(err) {
		t.Errorf("SetFinalizer on a stale copy: %v, want a conflict", err)
	}
	// The retry, on a fresh read, keeps both.
	fresh := &certpilotv1alpha1.Certificate{}
	if err := kubeClient().Get(ctx, client.ObjectKeyFromObject(cert), fresh); err != nil {
		t.Fatal(err)
	}
	if err := cpkube.SetFinalizer(ctx, kubeClient(), fresh, "certpilot.dev/challenge-cleanup", true); err != nil {
		t.Fatal(err)
	}
	if err := kubeClient().Get(ctx, client.ObjectKeyFromObject(cert), fresh); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fresh.Finalizers, foreignFinalizer) || !slices.Contains(fresh.Finalizers, "certpilot.dev/challenge-cleanup") {
		t.Errorf("finalizers %v, want both", fresh.Finalizers)
	}
	// Removing certpilot's keeps the other's too.
	if err := cpkube.SetFinalizer(ctx, kubeClient(), fresh, "certpilot.dev/challenge-cleanup", false); err != nil {
		t.Fatal(err)
	}
	if err := kubeClient().Get(ctx, client.ObjectKeyFromObject(cert), fresh); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fresh.Finalizers, []string{foreignFinalizer}) {
		t.Errorf("finalizers %v, want only %s", fresh.Finalizers, foreignFinalizer)
	}
	removeFinalizer(ctx, t, client.ObjectKeyFromObject(cert), foreignFinalizer)
}

func kubeClient() client.Client { return kube.Client }

// addFinalizer adds finalizer as a well-behaved other controller does: a merge patch with
// optimistic locking, retried on conflict.
func addFinalizer(ctx context.Context, key client.ObjectKey, finalizer string) error {
	for {
		cert := &certpilotv1alpha1.Certificate{}
		if err := kubeClient().Get(ctx, key, cert); err != nil {
			return err
		}
		if controllerutil.ContainsFinalizer(cert, finalizer) {
			return nil
		}
		base := cert.DeepCopy()
		controllerutil.AddFinalizer(cert, finalizer)
		err := kubeClient().Patch(ctx, cert, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		if !apierrors.IsConflict(err) {
			return err
		}
	}
}

func removeFinalizer(ctx context.Context, t testing.TB, key client.ObjectKey, finalizer string) {
	t.Helper()
	for {
		cert := &certpilotv1alpha1.Certificate{}
		if err := kubeClient().Get(ctx, key, cert); err != nil {
			if !apierrors.IsNotFound(err) {
				t.Error(err)
			}
			return
		}
		base := cert.DeepCopy()
		if !controllerutil.RemoveFinalizer(cert, finalizer) {
			return
		}
		err := kubeClient().Patch(ctx, cert, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		if err == nil || !apierrors.IsConflict(err) {
			if err != nil {
				t.Error(err)
			}
			return
		}
	}
}

// TestFaultsConflictingWriters: while certificates are issued, another writer keeps patching
// the same objects: it adds its own finalizer to each Certificate (optimistic locking, retried),
// annotates the Certificates, sets a condition of its own type in their status, and labels and
// annotates their Secrets. Every certificate converges with one order and one issuance, and none
// of the other writer's changes is lost.
func TestFaultsConflictingWriters(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "rel-writers", testenv.PebbleOptions{}, testenv.StackOptions{})
	n := caBatch(t)
	before := countsAt(s.Pebble)
	certs := createCertificates(t, s, "writers", "writers.test", n)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	writes, conflicts := 0, 0
	var mu sync.Mutex
	for _, cert := range certs {
		key := client.ObjectKeyFromObject(cert)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := addFinalizer(ctx, key, foreignFinalizer); err != nil {
				t.Error(err)
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				w, c := writeAsAnotherController(ctx, t, key, cert.Spec.SecretName, i)
				mu.Lock()
				writes, conflicts = writes+w, conflicts+c
				mu.Unlock()
			}
		}()
	}
	waitAllReady(t, certs, 3*time.Minute)
	close(stop)
	wg.Wait()
	checkStored(t, certs)
	got := countsAt(s.Pebble).since(before)
	checkIssuedOnce(t, got, n, 0)

	for _, cert := range certs {
		if err := kubeClient().Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(cert.Finalizers, foreignFinalizer) {
			t.Errorf("Certificate %s lost the other controller's finalizer: %v", cert.Name, cert.Finalizers)
		}
		if cert.Annotations["example.com/touched"] == "" {
			t.Errorf("Certificate %s lost the other writer's annotation", cert.Name)
		}
		if meta.FindStatusCondition(cert.Status.Conditions, "example.com/Audited") == nil {
			t.Errorf("Certificate %s lost the other writer's status condition: %+v", cert.Name, cert.Status.Conditions)
		}
		secret := &corev1.Secret{}
		if err := kubeClient().Get(ctx, client.ObjectKey{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, secret); err != nil {
			t.Fatal(err)
		}
		if secret.Labels["example.com/backup"] != "true" {
			t.Errorf("Secret %s lost the other writer's label: %v", secret.Name, secret.Labels)
		}
	}
	// Deleting: certpilot lets go, the other controller's finalizer holds the object.
	for _, cert := range certs {
		if err := kubeClient().Delete(ctx, cert); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, time.Minute, "certpilot's finalizers removed", func() error {
		for _, cert := range certs {
			if err := kubeClient().Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
				return err
			}
			if !slices.Equal(cert.Finalizers, []string{foreignFinalizer}) {
				return fmt.Errorf("Certificate %s finalizers %v", cert.Name, cert.Finalizers)
			}
		}
		return nil
	})
	for _, cert := range certs {
		removeFinalizer(ctx, t, client.ObjectKeyFromObject(cert), foreignFinalizer)
	}
	figure(t, "%d certificates, another writer made %d writes (%d conflicts retried) on them and their Secrets: %d orders, %d issued at the CA",
		n, writes, conflicts, got.orders, got.issued)
}

// writeAsAnotherController makes one round of the other writer's changes on a Certificate and
// its Secret; it returns the writes made and conflicts met.
func writeAsAnotherController(ctx context.Context, t testing.TB, key client.ObjectKey, secretName string, i int) (writes, conflicts int) {
	cert := &certpilotv1alpha1.Certificate{}
	if err := kubeClient().Get(ctx, key, cert); err != nil {
		return 0, 0
	}
	base := cert.DeepCopy()
	if cert.Annotations == nil {
		cert.Annotations = map[string]string{}
	}
	cert.Annotations["example.com/touched"] = fmt.Sprint(i)
	if err := kubeClient().Patch(ctx, cert, client.MergeFrom(base)); err == nil {
		writes++
	}
	// A status condition of its own type, with optimistic locking as a careful writer does.
	base = cert.DeepCopy()
	meta.SetStatusCondition(&cert.Status.Conditions, metav1.Condition{Type: "example.com/Audited", Status: metav1.ConditionTrue,
		Reason: "Audited", Message: fmt.Sprintf("round %d", i/10), ObservedGeneration: cert.Generation})
	switch err := kubeClient().Status().Patch(ctx, cert, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); {
	case err == nil:
		writes++
	case apierrors.IsConflict(err):
		conflicts++
	}
	secret := &corev1.Secret{}
	if err := kubeClient().Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: secretName}, secret); err == nil {
		base := secret.DeepCopy()
		if secret.Labels == nil {
			secret.Labels = map[string]string{}
		}
		secret.Labels["example.com/backup"] = "true"
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations["example.com/seen"] = fmt.Sprint(i)
		if err := kubeClient().Patch(ctx, secret, client.MergeFrom(base)); err == nil {
			writes++
		}
	}
	timer := time.NewTimer(50 * time.Millisecond) // the other writer's pace
	<-timer.C
	return writes, conflicts
}

// cuttingProxy forwards TCP connections to an address and can cut them all and refuse new ones
// for a while: an apiserver that restarts, as its clients see it (TLS passes through).
type cuttingProxy struct {
	listener net.Listener
	target   string
	mu       sync.Mutex
	down     bool
	conns    map[net.Conn]bool
}

func startCuttingProxy(t testing.TB, target string) *cuttingProxy {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{listener: listener, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { listener.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *cuttingProxy) Address() string { return p.listener.Addr().String() }

func (p *cuttingProxy) serve() {
	for {
		conn, err := p.listener.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			conn.Close()
			continue
		}
		upstream, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			conn.Close()
			continue
		}
		p.conns[conn], p.conns[upstream] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(upstream, conn); upstream.Close() }()
		go func() { _, _ = io.Copy(conn, upstream); conn.Close() }()
	}
}

// cut closes every connection.
func (p *cuttingProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for conn := range p.conns {
		conn.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func (p *cuttingProxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.cut()
	}
}

// apiOutage is how long the apiserver stays away from the manager.
const apiOutage = 15 * time.Second

// TestFaultsAPIServerAway: the manager's and the edge's connections to the apiserver are cut
// mid-issuance and refused for apiOutage, as when the apiserver restarts (watches break,
// requests fail, the lease cannot be renewed), then it is back. Every certificate converges,
// issued once at the CA. (envtest's apiserver itself is not restarted: its Stop
// and Start make a new serving CA and new admin credentials, which the running manager's
// kubeconfig would not trust.)
func TestFaultsAPIServerAway(t *testing.T) {
	testenv.SkipIfShort(t)
	apiserver, err := url.Parse(kube.Config.Host)
	if err != nil || apiserver.Host == "" {
		apiserver = &url.URL{Host: kube.Config.Host}
	}
	proxy := startCuttingProxy(t, apiserver.Host)
	s := startStack(t, "rel-apiaway", testenv.PebbleOptions{}, testenv.StackOptions{APIServerAddress: proxy.Address()})
	n := caBatch(t)
	before := countsAt(s.Pebble)
	offset := len(s.Manager.Output())
	certs := createCertificates(t, s, "apiaway", "apiaway.test", n)
	waitForAnOrder(t, s, offset, certs)
	proxy.setDown(true)
	away := time.Now()
	timer := time.NewTimer(apiOutage) // the fault's duration
	<-timer.C
	proxy.setDown(false)
	waitAllReady(t, certs, 3*time.Minute)
	checkStored(t, certs)
	got := countsAt(s.Pebble).since(before)
	// An order created just before the cut whose status write failed is resumed from the
	// manager's memory: no extra order, unless the manager itself exited in the outage (then
	// at most one per Certificate), and never a second certificate.
	extra := 0
	if exited, err := s.Manager.Exited(); exited {
		t.Logf("the manager exited during the outage (%v)", err)
		extra = n
	}
	checkIssuedOnce(t, got, n, extra)
	figure(t, "%d certificates, the apiserver away for %s after the first order: %d orders, %d issued at the CA, all Ready %s after the cut",
		n, apiOutage, got.orders, got.issued, time.Since(away).Round(100*time.Millisecond))
}
