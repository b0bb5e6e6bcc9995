package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testcluster"
)

// issueThroughMountedFiles issues a certificate through a load balancer that reads the challenge
// responses only from the mounted shards (the edge with --challenge-dir and no API access), as a
// third-party load balancer honouring the contract through its volume does. The kubelet runs
// with its default syncFrequency (1 minute), so the response reaches the pod when the kubelet
// next syncs it; the test measures that delay on the node's files and the time to Ready.
func issueThroughMountedFiles(t *testing.T, ctx context.Context, k client.Client) {
	const ns, name, dnsName = "files", "files-lb", "files.cluster.test"
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAndWait(t, k, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}) })

	labels := map[string]string{"app": name}
	// The shards' projected volume declared up front, as the contract allows, so that the
	// Deployment does not roll when certpilot first uses it.
	var sources []corev1.VolumeProjection
	for i := range certpilotv1alpha1.ChallengeShards {
		sources = append(sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: certpilotv1alpha1.ChallengeShardName(name, i)},
			Optional:             ptr.To(true),
		}})
	}
	deployment := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					Volumes: []corev1.Volume{{Name: "certpilot-acme-challenges", VolumeSource: corev1.VolumeSource{
						Projected: &corev1.ProjectedVolumeSource{Sources: sources},
					}}},
					Containers: []corev1.Container{{
						Name: "lb", Image: testcluster.CertpilotImage, ImagePullPolicy: corev1.PullIfNotPresent,
						Command: []string{"/edge"},
						Args: []string{"--challenge-dir=" + certpilotv1alpha1.ChallengeVolumeMountPath,
							"--https-bind-address=:8443", "--http-bind-address=:8080", "--health-bind-address=:8082"},
						VolumeMounts: []corev1.VolumeMount{{Name: "certpilot-acme-challenges",
							MountPath: certpilotv1alpha1.ChallengeVolumeMountPath, ReadOnly: true}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8082)}}},
					}},
				},
			},
		},
	}
	if err := k.Create(ctx, deployment); err != nil {
		t.Fatal(err)
	}
	service := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443)},
		}},
	}
	if err := k.Create(ctx, service); err != nil {
		t.Fatal(err)
	}
	pod := waitPodReady(t, ctx, k, ns, labels)

	lbIP, err := testcluster.ServiceIP(ctx, k, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	pebble, err := cluster.StartPebble(ctx, lbIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pebble.Stop)
	issuer := testcluster.PebbleClusterIssuer("pebble-files", pebble, ns, name, net.JoinHostPort(lbIP, "443"))
	if err := k.Create(ctx, issuer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAndWait(t, k, issuer) })

	// Two Certificates one after the other: each response waits for the kubelet's next sync of
	// the pod, which may come at any point of its period.
	for i, dnsName := range []string{dnsName, "settled." + dnsName} {
		issueFromFiles(t, ctx, k, ns, name, issuer.Name, pod, fmt.Sprintf("files-%d", i), dnsName)
	}
}

// issueFromFiles creates a Certificate for dnsName and measures when its response reaches the
// shard, then the pod's volume on the node, then when the Certificate is Ready.
func issueFromFiles(t *testing.T, ctx context.Context, k client.Client, ns, lb, issuer string, pod corev1.Pod, name, dnsName string) {
	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{dnsName},
			SecretName: name + "-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: issuer},
		},
	}
	created := time.Now()
	if err := k.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}

	// The response in the API (the shard), then in the pod's volume on the node.
	key := certpilotv1alpha1.TLSALPN01KeyPrefix + dnsName + certpilotv1alpha1.TLSALPN01KeySuffix
	shard := certpilotv1alpha1.ChallengeShardName(lb, certpilotv1alpha1.ChallengeShard(key))
	var written time.Time
	if err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var s corev1.Secret
		if err := k.Get(ctx, client.ObjectKey{Namespace: ns, Name: shard}, &s); err != nil {
			return false, nil
		}
		_, ok := s.Data[key]
		written = time.Now()
		return ok, nil
	}); err != nil {
		t.Fatalf("the response never reached shard %s: %v", shard, err)
	}
	file := filepath.Join(cluster.Dir, "kubelet", "pods", string(pod.UID), "volumes", "kubernetes.io~projected",
		"certpilot-acme-challenges", key)
	if err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		_, err := os.Stat(file)
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the response never reached the pod's volume (%s): %v", file, err)
	}
	propagated := time.Since(written)
	waitReady(t, ctx, k, cert)
	t.Logf("FIGURE mounted-file load balancer, %s: response in the shard %s after the Certificate, in the pod's files %s later (kubelet syncFrequency 1m), Certificate Ready %s after creation",
		dnsName, written.Sub(created).Round(100*time.Millisecond), propagated.Round(100*time.Millisecond), time.Since(created).Round(100*time.Millisecond))
}

// waitPodReady waits for one Ready pod with labels in ns and returns it.
func waitPodReady(t *testing.T, ctx context.Context, k client.Client, ns string, labels map[string]string) corev1.Pod {
	t.Helper()
	var ready corev1.Pod
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var list corev1.PodList
		if err := k.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
			return false, err
		}
		for _, p := range list.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
					ready = p
					return true, nil
				}
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no Ready pod %v in %s: %v", labels, ns, err)
	}
	return ready
}
