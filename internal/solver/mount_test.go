package solver

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/outcome"
)

// lbDeployment is a load balancer Deployment with the given containers, mounting nothing.
func lbDeployment(namespace, name string, containers ...string) *appsv1.Deployment {
	deployment := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	for _, container := range containers {
		deployment.Spec.Template.Spec.Containers = append(deployment.Spec.Template.Spec.Containers,
			corev1.Container{Name: container, Image: "haproxy:3"})
	}
	return deployment
}

// mount gives deployment the challenge volume over the named shard Secrets, mounted in every
// container, written out by hand as the contract describes it.
func mount(deployment *appsv1.Deployment, shards []string) *appsv1.Deployment {
	deployment = deployment.DeepCopy()
	projected := &corev1.ProjectedVolumeSource{}
	for _, shard := range shards {
		projected.Sources = append(projected.Sources, corev1.VolumeProjection{
			Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: shard}, Optional: ptr.To(true)},
		})
	}
	spec := &deployment.Spec.Template.Spec
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: ChallengeVolumeName, VolumeSource: corev1.VolumeSource{Projected: projected}})
	for i := range spec.Containers {
		spec.Containers[i].VolumeMounts = append(spec.Containers[i].VolumeMounts,
			corev1.VolumeMount{Name: ChallengeVolumeName, MountPath: certpilotv1alpha1.ChallengeVolumeMountPath, ReadOnly: true})
	}
	return deployment
}

func TestShardNames(t *testing.T) {
	names := shardNames("lb")
	if len(names) != certpilotv1alpha1.ChallengeShards {
		t.Fatalf("%d shard names, want %d", len(names), certpilotv1alpha1.ChallengeShards)
	}
	for i, name := range names {
		if want := certpilotv1alpha1.ChallengeShardName("lb", i); name != want {
			t.Errorf("shard %d = %q, want %q", i, name, want)
		}
	}
}

func TestMountsShards(t *testing.T) {
	plain := lbDeployment("edge", "lb", "haproxy", "exporter")
	mounted := mount(plain, shardNames("lb"))
	tests := map[string]struct {
		deployment *appsv1.Deployment
		want       bool
	}{
		"every shard in every container": {deployment: mounted, want: true},
		"nothing mounted":                {deployment: plain, want: false},
		"a shard missing":                {deployment: mount(plain, shardNames("lb")[1:]), want: false},
		"another load balancer's shards": {deployment: mount(plain, shardNames("other")), want: false},
		"the single Secret of earlier versions": {deployment: func() *appsv1.Deployment {
			d := plain.DeepCopy()
			d.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: ChallengeVolumeName, VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: "lb-acme-challenges"},
			}}}
			return d
		}(), want: false},
		"a container added since": {deployment: func() *appsv1.Deployment {
			d := mounted.DeepCopy()
			d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "sidecar"})
			return d
		}(), want: false},
		"another projection beside the shards": {deployment: func() *appsv1.Deployment {
			d := mounted.DeepCopy()
			projected := d.Spec.Template.Spec.Volumes[0].Projected
			projected.Sources = append(projected.Sources, corev1.VolumeProjection{
				ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "extra"}},
			})
			return d
		}(), want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := mountsShards(tc.deployment); got != tc.want {
				t.Errorf("mountsShards = %v, want %v", got, tc.want)
			}
		})
	}
}

// appliedDeployment decodes what an apply configuration sets.
func appliedDeployment(t *testing.T, applied runtime.ApplyConfiguration) *appsv1.Deployment {
	t.Helper()
	data, err := json.Marshal(applied)
	if err != nil {
		t.Fatal(err)
	}
	deployment := &appsv1.Deployment{}
	if err := json.Unmarshal(data, deployment); err != nil {
		t.Fatal(err)
	}
	return deployment
}

// checkChallengeVolumeApply asserts that applied sets certpilot's fields of deployment and no
// others: the projected volume over every shard, optional, and a read-only mount in each
// container, named as in the Deployment so that apply merges them by name.
func checkChallengeVolumeApply(t *testing.T, deployment *appsv1.Deployment, applied runtime.ApplyConfiguration) {
	t.Helper()
	got := appliedDeployment(t, applied)
	if got.Namespace != deployment.Namespace || got.Name != deployment.Name {
		t.Errorf("applied to %s/%s, want %s/%s", got.Namespace, got.Name, deployment.Namespace, deployment.Name)
	}
	want := mount(lbDeployment(deployment.Namespace, deployment.Name), shardNames(deployment.Name)).Spec.Template.Spec
	for _, container := range deployment.Spec.Template.Spec.Containers {
		want.Containers = append(want.Containers, corev1.Container{Name: container.Name, VolumeMounts: []corev1.VolumeMount{
			{Name: ChallengeVolumeName, MountPath: certpilotv1alpha1.ChallengeVolumeMountPath, ReadOnly: true},
		}})
	}
	gotJSON, _ := json.Marshal(got.Spec.Template.Spec)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("applied pod spec\n%s\nwant\n%s", gotJSON, wantJSON)
	}
}

func TestChallengeVolumeApply(t *testing.T) {
	deployment := lbDeployment("edge", "lb", "haproxy", "exporter")
	checkChallengeVolumeApply(t, deployment, challengeVolumeApply(deployment))
}

// ensureFixture is a MountTracker with a fake clock, the API reader that counts its reads of the
// Deployment, and the applies Ensure asked for (recorded, not carried out: apply semantics are
// tested on envtest).
type ensureFixture struct {
	tracker  *MountTracker
	deps     *Deps
	api      *countingReader
	clock    *clocktesting.FakePassiveClock
	applies  []runtime.ApplyConfiguration
	applyErr error
}

func newEnsureFixture(t *testing.T, objects ...client.Object) *ensureFixture {
	f := &ensureFixture{tracker: &MountTracker{}, clock: clocktesting.NewFakePassiveClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))}
	f.api = &countingReader{Client: fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objects...).Build()}
	writer := fake.NewClientBuilder().WithScheme(testScheme(t)).WithInterceptorFuncs(interceptor.Funcs{
		Apply: func(_ context.Context, _ client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			options := (&client.ApplyOptions{}).ApplyOptions(opts)
			if options.FieldManager != kube.FieldManager || options.Force == nil || !*options.Force {
				t.Errorf("apply with field manager %q, force %v; want %q, forced", options.FieldManager, options.Force, kube.FieldManager)
			}
			f.applies = append(f.applies, obj)
			return f.applyErr
		},
	}).Build()
	f.deps = &Deps{Client: writer, APIReader: f.api, Clock: f.clock}
	return f
}

func (f *ensureFixture) ensure(name string) error {
	return f.tracker.Ensure(context.Background(), f.deps, types.NamespacedName{Namespace: "edge", Name: name})
}

// TestMountTrackerEnsure: a Deployment that does not mount its shards is asked to, once; one
// found mounting them is trusted for mountRecheck without another read.
func TestMountTrackerEnsure(t *testing.T) {
	deployment := lbDeployment("edge", "lb", "haproxy", "exporter")
	f := newEnsureFixture(t, deployment)

	if err := f.ensure("lb"); err != nil {
		t.Fatal(err)
	}
	if f.api.gets != 1 || len(f.applies) != 1 {
		t.Fatalf("first Ensure: %d reads, %d applies; want 1, 1", f.api.gets, len(f.applies))
	}
	checkChallengeVolumeApply(t, deployment, f.applies[0])

	f.clock.SetTime(f.clock.Now().Add(mountRecheck - time.Second))
	if err := f.ensure("lb"); err != nil {
		t.Fatal(err)
	}
	if f.api.gets != 1 || len(f.applies) != 1 {
		t.Fatalf("Ensure within %s: %d reads, %d applies; want no new ones", mountRecheck, f.api.gets, len(f.applies))
	}

	// After mountRecheck the pod template is read again; now that it mounts the shards, nothing
	// is applied.
	if err := f.api.Update(context.Background(), mount(deployment, shardNames("lb"))); err != nil {
		t.Fatal(err)
	}
	f.clock.SetTime(f.clock.Now().Add(time.Second))
	if err := f.ensure("lb"); err != nil {
		t.Fatal(err)
	}
	if f.api.gets != 2 || len(f.applies) != 1 {
		t.Fatalf("Ensure after %s: %d reads, %d applies; want 2, 1", mountRecheck, f.api.gets, len(f.applies))
	}
}

// TestMountTrackerEnsureFailures: a missing Deployment waits, a refused apply is an error, and
// neither is remembered as mounted.
func TestMountTrackerEnsureFailures(t *testing.T) {
	t.Run("no Deployment", func(t *testing.T) {
		f := newEnsureFixture(t)
		for attempt := 1; attempt <= 2; attempt++ {
			err := f.ensure("lb")
			if wait, ok := outcome.AsWait(err); !ok || wait.Reason != "LoadBalancerNotFound" {
				t.Fatalf("Ensure = %v, want Wait LoadBalancerNotFound", err)
			}
			if f.api.gets != attempt {
				t.Errorf("reads after %d attempts = %d: a missing Deployment must be read again", attempt, f.api.gets)
			}
		}
	})
	t.Run("apply refused", func(t *testing.T) {
		f := newEnsureFixture(t, lbDeployment("edge", "lb", "haproxy"))
		f.applyErr = errors.New("admission webhook denied the request")
		for attempt := 1; attempt <= 2; attempt++ {
			err := f.ensure("lb")
			if err == nil || !strings.Contains(err.Error(), "mounting the challenge Secrets into Deployment edge/lb") ||
				!errors.Is(err, f.applyErr) {
				t.Fatalf("Ensure = %v, want the refused apply, explained", err)
			}
			if len(f.applies) != attempt {
				t.Errorf("applies after %d attempts = %d: a refused apply must be tried again", attempt, len(f.applies))
			}
		}
	})
	t.Run("one load balancer does not vouch for another", func(t *testing.T) {
		f := newEnsureFixture(t, mount(lbDeployment("edge", "a", "haproxy"), shardNames("a")), lbDeployment("edge", "b", "haproxy"))
		for _, name := range []string{"a", "b"} {
			if err := f.ensure(name); err != nil {
				t.Fatal(err)
			}
		}
		if f.api.gets != 2 || len(f.applies) != 1 {
			t.Fatalf("%d reads, %d applies; want 2, 1 (only b applied)", f.api.gets, len(f.applies))
		}
		if got := appliedDeployment(t, f.applies[0]).Name; got != "b" {
			t.Errorf("applied to %q, want b", got)
		}
	})
}
