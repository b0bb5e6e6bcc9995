package bench

import (
	"context"
	"encoding/base64"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// BenchmarkAPIWrites measures what one write of each kind an issuance makes costs the apiserver
// and etcd in CPU (user + system, per write), 32 at a time on one connection, with the audit log
// make bench uses: the price list behind the ratio to the Kubernetes floor. The floor writes a
// Certificate, its status and a certificate Secret; certpilot's manager also a claim Secret, an
// Event and about one challenge shard patch per certificate.
//
//	go test ./test/bench/ -run '^$' -bench APIWrites -benchtime 1000x
func BenchmarkAPIWrites(b *testing.B) {
	testenv.SkipIfShort(b)
	kube, err := testenv.StartKubeWith(testenv.KubeOptions{AuditLogPath: b.TempDir() + "/audit/audit.log"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = kube.Stop() })
	config := rest.CopyConfig(kube.Config)
	config.QPS = -1
	c, err := client.New(config, client.Options{Scheme: kube.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	namespace := "writes"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		b.Fatal(err)
	}
	chain, key := make([]byte, 5500), make([]byte, 240) // a certificate Secret's and a claim's sizes
	var round atomic.Int64
	measure := func(b *testing.B, write func(ctx context.Context, prefix string, i int) error) {
		prefix := fmt.Sprintf("r%d", round.Add(1))
		var next atomic.Int64
		b.SetParallelism(16)
		before := processCPU()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := write(ctx, prefix, int(next.Add(1))); err != nil {
					b.Error(err)
				}
			}
		})
		b.StopTimer()
		spent := cpuSince(before, processCPU())
		for _, process := range []string{"kube-apiserver", "etcd"} {
			b.ReportMetric(float64(spent[process].Microseconds())/float64(b.N), process+"-µs/op")
		}
	}
	certificate := func(prefix string, i int) *certpilotv1alpha1.Certificate {
		name := fmt.Sprintf("%s-%d", prefix, i)
		return &certpilotv1alpha1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Spec: certpilotv1alpha1.CertificateSpec{SecretName: name + "-tls", DNSNames: []string{name + ".bench.test"},
				IssuerRef: certpilotv1alpha1.IssuerReference{Name: "bench", Kind: "ClusterIssuer"}},
		}
	}
	secret := func(name string, data []byte) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue}},
			Data:       map[string][]byte{corev1.TLSPrivateKeyKey: data},
		}
	}

	b.Run("create Certificate", func(b *testing.B) {
		measure(b, func(ctx context.Context, prefix string, i int) error { return c.Create(ctx, certificate(prefix, i)) })
	})
	// statusWrites measures write setting a Ready status on Certificates created first, outside
	// the measurement.
	statusWrites := func(b *testing.B, write func(ctx context.Context, cert, base *certpilotv1alpha1.Certificate) error) {
		prefix := fmt.Sprintf("s%d", round.Add(1))
		certs := make([]*certpilotv1alpha1.Certificate, b.N+1)
		for i := range certs {
			certs[i] = certificate(prefix, i)
			if err := c.Create(ctx, certs[i]); err != nil {
				b.Fatal(err)
			}
		}
		measure(b, func(ctx context.Context, _ string, i int) error {
			cert := certs[i%len(certs)]
			base := cert.DeepCopy()
			now := metav1.Now()
			cert.Status.NotBefore, cert.Status.NotAfter, cert.Status.SerialNumber = &now, &now, "f8d8598429f3463"
			meta.SetStatusCondition(&cert.Status.Conditions, metav1.Condition{Type: certpilotv1alpha1.ConditionReady,
				Status: metav1.ConditionTrue, Reason: "UpToDate", Message: "Certificate is valid"})
			return write(ctx, cert, base)
		})
	}
	b.Run("patch Certificate status", func(b *testing.B) {
		statusWrites(b, func(ctx context.Context, cert, base *certpilotv1alpha1.Certificate) error {
			return c.Status().Patch(ctx, cert, client.MergeFrom(base))
		})
	})
	b.Run("update Certificate status", func(b *testing.B) {
		// The same status as an update of the status subresource with the resourceVersion read.
		statusWrites(b, func(ctx context.Context, cert, _ *certpilotv1alpha1.Certificate) error {
			return c.Status().Update(ctx, cert)
		})
	})
	b.Run("create Secret 6 KB", func(b *testing.B) {
		measure(b, func(ctx context.Context, prefix string, i int) error {
			return c.Create(ctx, secret(fmt.Sprintf("%s-%d-tls", prefix, i), chain))
		})
	})
	b.Run("create Secret 240 B", func(b *testing.B) {
		measure(b, func(ctx context.Context, prefix string, i int) error {
			return c.Create(ctx, secret(fmt.Sprintf("%s-%d-claim", prefix, i), key))
		})
	})
	// shardWrites measures write replacing one response of 32 shards of 12 responses each
	// (about the size of a shard in a burst, where removals ride along with the next write),
	// created first; writes to one shard take turns, as the ShardWriter's do.
	shardWrites := func(b *testing.B, write func(ctx context.Context, shard *corev1.Secret, key string, value []byte) error) {
		response := make([]byte, 880)
		prefix := fmt.Sprintf("h%d", round.Add(1))
		type shard struct {
			mu     sync.Mutex
			secret *corev1.Secret
		}
		shards := make([]*shard, certpilotv1alpha1.ChallengeShards)
		for i := range shards {
			shards[i] = &shard{secret: secret(fmt.Sprintf("%s-%02d", prefix, i), key)}
			for j := range 12 {
				shards[i].secret.Data[fmt.Sprintf("tls-alpn-01.n%d.bench.test.pem", j)] = response
			}
			if err := c.Create(ctx, shards[i].secret); err != nil {
				b.Fatal(err)
			}
		}
		measure(b, func(ctx context.Context, _ string, i int) error {
			s := shards[i%len(shards)]
			s.mu.Lock()
			defer s.mu.Unlock()
			return write(ctx, s.secret, fmt.Sprintf("tls-alpn-01.n%d.bench.test.pem", (i/len(shards))%12), fmt.Appendf(nil, "%d:%s", i, response))
		})
	}
	b.Run("patch challenge shard", func(b *testing.B) {
		// A JSON merge patch naming the key.
		shardWrites(b, func(ctx context.Context, shard *corev1.Secret, key string, value []byte) error {
			patch := fmt.Appendf(nil, `{"data":{%q:%q}}`, key, base64.StdEncoding.EncodeToString(value))
			return c.Patch(ctx, shard.DeepCopy(), client.RawPatch(types.MergePatchType, patch))
		})
	})
	b.Run("update challenge shard", func(b *testing.B) {
		// An update (PUT) of the whole shard with its resourceVersion, the body in protobuf, as
		// the ShardWriter writes.
		shardWrites(b, func(ctx context.Context, shard *corev1.Secret, key string, value []byte) error {
			shard.Data[key] = value
			return c.Update(ctx, shard)
		})
	})
	b.Run("create Event", func(b *testing.B) {
		measure(b, func(ctx context.Context, prefix string, i int) error {
			return c.Create(ctx, &eventsv1.Event{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), Namespace: namespace},
				EventTime:  metav1.NowMicro(), ReportingController: "certpilot", ReportingInstance: "certpilot-bench",
				Action: "Issue", Reason: "Issued", Type: corev1.EventTypeNormal,
				Note: "Certificate issued, valid until 2027-03-07T04:23:16Z",
				Regarding: corev1.ObjectReference{APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate",
					Namespace: namespace, Name: fmt.Sprintf("%s-%d", prefix, i)},
			})
		})
	})
}
