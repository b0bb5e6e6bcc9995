package solver

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/kube"
	"github.com/certpilot/certpilot/internal/outcome"
)

var deploymentGVK = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}

// ChallengeVolumeName is the volume certpilot adds to a load balancer's pod template.
const ChallengeVolumeName = "certpilot-acme-challenges"

// mountRecheck is how long a load balancer found mounting its shards is trusted to still do so
// before its Deployment is read again.
const mountRecheck = 10 * time.Minute

// MountTracker makes load balancer Deployments mount their challenge shards, and remembers
// which do, so that a reconcile reads a Deployment's pod template only now and then. Reconciles
// that ask about the same Deployment at once (a burst's first issuances) share one check.
type MountTracker struct {
	mu      sync.Mutex
	checked map[types.NamespacedName]time.Time
	checks  singleflight.Group
}

// Ensure makes the Deployment mount all its shards as one projected volume, with server-side
// apply under certpilot's own field manager: tools that apply the Deployment server-side (Argo
// CD, Flux) keep their fields and do not fight certpilot. A Deployment that already mounts them
// is left alone; one that mounts the single Secret of earlier versions through certpilot's
// volume gets the projected volume instead (one rollout).
func (m *MountTracker) Ensure(ctx context.Context, deps *Deps, lb types.NamespacedName) error {
	now := deps.now()
	m.mu.Lock()
	last, ok := m.checked[lb]
	m.mu.Unlock()
	if ok && now.Sub(last) < mountRecheck {
		return nil
	}
	// The first caller's context serves all who wait for it: a check is a read and at most one
	// apply, bounded by the callers' own reconcile deadlines.
	_, err, _ := m.checks.Do(lb.String(), func() (any, error) { return nil, m.check(ctx, deps, lb, now) })
	return err
}

// check reads the Deployment and applies the projected volume when it does not mount it.
func (m *MountTracker) check(ctx context.Context, deps *Deps, lb types.NamespacedName, now time.Time) error {
	deployment := &appsv1.Deployment{}
	if err := deps.APIReader.Get(ctx, lb, deployment); err != nil {
		if apierrors.IsNotFound(err) {
			return outcome.NewWait(30*time.Second, "LoadBalancerNotFound", "the load balancer Deployment %s does not exist", lb)
		}
		return err
	}
	if !mountsShards(deployment) {
		if err := deps.Client.Apply(ctx, challengeVolumeApply(deployment), client.FieldOwner(kube.FieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("mounting the challenge Secrets into Deployment %s: %w", lb, err)
		}
		ctrl.LoggerFrom(ctx).Info("Mounted the challenge Secrets into the load balancer", "deployment", lb.String())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.checked == nil {
		m.checked = map[types.NamespacedName]time.Time{}
	}
	m.checked[lb] = now
	return nil
}

// shardNames lists the Deployment's shard Secrets.
func shardNames(deployment string) []string {
	names := make([]string, certpilotv1alpha1.ChallengeShards)
	for i := range names {
		names[i] = certpilotv1alpha1.ChallengeShardName(deployment, i)
	}
	return names
}

// mountsShards reports whether the pod template has certpilot's volume projecting every shard
// and every container mounts it.
func mountsShards(deployment *appsv1.Deployment) bool {
	spec := deployment.Spec.Template.Spec
	index := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == ChallengeVolumeName })
	if index < 0 || spec.Volumes[index].Projected == nil {
		return false
	}
	var projected []string
	for _, source := range spec.Volumes[index].Projected.Sources {
		if source.Secret != nil {
			projected = append(projected, source.Secret.Name)
		}
	}
	if !slices.Equal(projected, shardNames(deployment.Name)) {
		return false
	}
	for _, container := range spec.Containers {
		if !slices.ContainsFunc(container.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == ChallengeVolumeName }) {
			return false
		}
	}
	return true
}

// challengeVolumeApply is certpilot's part of the Deployment: the projected volume over every
// shard (optional: shards that hold nothing yet may not exist) and its read-only mount in every
// container.
func challengeVolumeApply(deployment *appsv1.Deployment) *appsv1ac.DeploymentApplyConfiguration {
	projected := corev1ac.ProjectedVolumeSource()
	for _, name := range shardNames(deployment.Name) {
		projected.WithSources(corev1ac.VolumeProjection().WithSecret(
			corev1ac.SecretProjection().WithName(name).WithOptional(true)))
	}
	podSpec := corev1ac.PodSpec().WithVolumes(corev1ac.Volume().WithName(ChallengeVolumeName).WithProjected(projected))
	for _, container := range deployment.Spec.Template.Spec.Containers {
		podSpec.WithContainers(corev1ac.Container().WithName(container.Name).WithVolumeMounts(
			corev1ac.VolumeMount().WithName(ChallengeVolumeName).
				WithMountPath(certpilotv1alpha1.ChallengeVolumeMountPath).WithReadOnly(true)))
	}
	return appsv1ac.Deployment(deployment.Name, deployment.Namespace).WithSpec(appsv1ac.DeploymentSpec().
		WithTemplate(corev1ac.PodTemplateSpec().WithSpec(podSpec)))
}
