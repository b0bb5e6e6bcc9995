package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestInjectIntoWorkloads: a Certificate delivers its bundle into a Deployment as an env
// reference (never the value) with a rollout annotation, and into another as a read-only
// volume; a renewal changes the annotation and nothing else; a workload created later is
// injected; a second Certificate with the same env name is refused; removing the entries
// restores the Deployment exactly. A GitOps tool applying the same Deployment server-side keeps
// its fields at every step, and no workload ever holds key or certificate bytes.
func TestInjectIntoWorkloads(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	s := startStack(t, "e2e-inject", 0)
	ns := s.Namespace
	get := func(name string) *appsv1.Deployment {
		t.Helper()
		deployment := &appsv1.Deployment{}
		if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, deployment); err != nil {
			t.Fatal(err)
		}
		return deployment
	}
	// "web" is injected into; "web-twin" gets the same GitOps applies and never an injection:
	// it is what web must look like once the injection is removed.
	gitops := func(extraEnv ...string) {
		t.Helper()
		for _, name := range []string{"web", "web-twin"} {
			if err := kube.Client.Apply(ctx, gitopsDeployment(ns, name, extraEnv...), client.FieldOwner("gitops"), client.ForceOwnership); err != nil {
				t.Fatal(err)
			}
		}
	}
	gitops()
	original := get("web").Spec.Template
	// The other kinds: a StatefulSet with the variable, a DaemonSet with a mount that rolls.
	podTemplate := func(name string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: name + ":1"}}},
		}
	}
	selector := func(name string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}
	}
	for _, obj := range []client.Object{
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
			Spec: appsv1.StatefulSetSpec{Selector: selector("db"), Template: podTemplate("db")}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: ns},
			Spec: appsv1.DaemonSetSpec{Selector: selector("agent"), Template: podTemplate("agent")}},
	} {
		if err := kube.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	cert := s.TLSALPN01Certificate("inject", "inject.test")
	cert.Spec.Inject = []certpilotv1alpha1.InjectTarget{
		{Kind: "Deployment", Name: "web", Container: "app", Env: "SSL_CERTS"},
		{Kind: "Deployment", Name: "late", MountPath: "/etc/tls"}, // created below
		{Kind: "StatefulSet", Name: "db", Env: "DB_CERTS"},
		{Kind: "DaemonSet", Name: "agent", MountPath: "/tls", Rollout: "Always"},
	}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, time.Minute, "")
	serialAnnotation := "certpilot.dev/serial-inject"

	// env: the reference and the rollout annotation; the target that does not exist yet is
	// reported, without failing the certificate.
	testenv.Eventually(t, 30*time.Second, "env injected into web", func() error {
		template := get("web").Spec.Template
		if err := hasEnvRef(template, "app", "SSL_CERTS", "inject-tls"); err != nil {
			return err
		}
		if got := template.Annotations[serialAnnotation]; got != cert.Status.SerialNumber {
			return fmt.Errorf("annotation %s = %q, want serial %s", serialAnnotation, got, cert.Status.SerialNumber)
		}
		return injectedCondition(ctx, cert, metav1.ConditionFalse, "TargetNotFound")
	})
	if !meta.IsStatusConditionTrue(cert.Status.Conditions, certpilotv1alpha1.ConditionReady) {
		t.Error("a missing inject target turned Ready False")
	}
	scanWorkloads(t, ctx, ns)

	// A target created after the Certificate is picked up by the watch.
	late := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: ns}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "late"}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "late"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "late", Image: "late:1"}}},
		},
	}}
	if err := kube.Client.Create(ctx, late); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "volume in the late Deployment", func() error {
		late = get("late")
		if err := hasSecretVolume(late.Spec.Template, "late", "/etc/tls", "inject-tls"); err != nil {
			return err
		}
		if _, ok := late.Spec.Template.Annotations[serialAnnotation]; ok {
			return fmt.Errorf("a mounted Certificate rolls by default: annotations %v", late.Spec.Template.Annotations)
		}
		return injectedCondition(ctx, cert, metav1.ConditionTrue, "Injected")
	})
	db := &appsv1.StatefulSet{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db"}, db); err != nil {
		t.Fatal(err)
	}
	if err := hasEnvRef(db.Spec.Template, "db", "DB_CERTS", "inject-tls"); err != nil {
		t.Errorf("StatefulSet: %v", err)
	}
	if got := db.Spec.Template.Annotations[serialAnnotation]; got != cert.Status.SerialNumber {
		t.Errorf("StatefulSet annotation %q, want %s", got, cert.Status.SerialNumber)
	}
	agent := &appsv1.DaemonSet{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "agent"}, agent); err != nil {
		t.Fatal(err)
	}
	if err := hasSecretVolume(agent.Spec.Template, "agent", "/tls", "inject-tls"); err != nil {
		t.Errorf("DaemonSet: %v", err)
	}
	if got := agent.Spec.Template.Annotations[serialAnnotation]; got != cert.Status.SerialNumber {
		t.Errorf("DaemonSet with rollout Always: annotation %q, want %s", got, cert.Status.SerialNumber)
	}

	// GitOps applies its manifest again, with a new variable: both keep their fields, and
	// nobody fights (certpilot writes nothing back).
	gitops("LOG_LEVEL")
	testenv.Eventually(t, 10*time.Second, "GitOps and certpilot fields side by side", func() error {
		template := get("web").Spec.Template
		if err := hasEnvRef(template, "app", "SSL_CERTS", "inject-tls"); err != nil {
			return err
		}
		if !hasEnv(template, "app", "LOG_LEVEL") || !hasEnv(template, "app", "GITOPS") {
			return fmt.Errorf("GitOps's variables are gone: %+v", template.Spec.Containers)
		}
		return nil
	})
	settled := get("web")
	// A reconcile that changes nothing writes nothing.
	pokeAndWaitForReconcile(t, s, cert)
	if web := get("web"); web.ResourceVersion != settled.ResourceVersion {
		t.Errorf("an idle reconcile wrote the Deployment: generation %d -> %d", settled.Generation, web.Generation)
	}

	// A second Certificate under the same env name is refused and leaves the first's alone.
	other := s.TLSALPN01Certificate("other", "other.inject.test")
	other.Spec.Inject = []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", Container: "app", Env: "SSL_CERTS"}}
	if err := kube.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	waitReady(t, other, time.Minute, "")
	testenv.Eventually(t, 30*time.Second, "second Certificate refused", func() error {
		return injectedCondition(ctx, other, metav1.ConditionFalse, "InjectConflict")
	})
	waitForEvents(t, other, 10*time.Second, "InjectConflict")
	if err := hasEnvRef(get("web").Spec.Template, "app", "SSL_CERTS", "inject-tls"); err != nil {
		t.Errorf("the refused Certificate changed the first one's variable: %v", err)
	}
	patch := client.MergeFrom(other.DeepCopy())
	other.Spec.Inject = nil
	if err := kube.Client.Patch(ctx, other, patch); err != nil {
		t.Fatal(err)
	}

	// Renewal: the annotation changes and nothing else in the pod template.
	before := get("web")
	lateBefore := get("late")
	first := cert.Status.SerialNumber
	patch = client.MergeFrom(cert.DeepCopy())
	cert.Annotations[certpilotv1alpha1.AnnotationRenew] = "inject-1"
	if err := kube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, time.Minute, first)
	testenv.Eventually(t, 30*time.Second, "rollout annotation follows the renewal", func() error {
		if got := get("web").Spec.Template.Annotations[serialAnnotation]; got != cert.Status.SerialNumber {
			return fmt.Errorf("annotation %q, want the new serial %s", got, cert.Status.SerialNumber)
		}
		return nil
	})
	after := get("web")
	withoutSerial := func(template corev1.PodTemplateSpec) corev1.PodTemplateSpec {
		template = *template.DeepCopy()
		delete(template.Annotations, serialAnnotation)
		return template
	}
	if !equality.Semantic.DeepEqual(withoutSerial(before.Spec.Template), withoutSerial(after.Spec.Template)) {
		t.Errorf("the renewal changed more than the annotation:\nbefore %s\nafter  %s", toJSON(before.Spec.Template), toJSON(after.Spec.Template))
	}
	if after.Generation != before.Generation+1 {
		t.Errorf("the renewal wrote web %d times, want once", after.Generation-before.Generation)
	}
	if lateAfter := get("late"); lateAfter.ResourceVersion != lateBefore.ResourceVersion {
		t.Errorf("the renewal rolled the mounted Deployment (rollout Never): %s", toJSON(lateAfter.Spec.Template))
	}

	// mountPath in web too, beside the env reference.
	patch = client.MergeFrom(cert.DeepCopy())
	cert.Spec.Inject = append(cert.Spec.Inject, certpilotv1alpha1.InjectTarget{Kind: "Deployment", Name: "web", MountPath: "/etc/certs"})
	if err := kube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "volume in web", func() error {
		template := get("web").Spec.Template
		for _, container := range []string{"app", "sidecar"} {
			if err := hasSecretVolume(template, container, "/etc/certs", "inject-tls"); err != nil {
				return err
			}
		}
		return hasEnvRef(template, "app", "SSL_CERTS", "inject-tls")
	})
	scanWorkloads(t, ctx, ns)

	// GitOps goes back to its first manifest, then the entries for web are removed: web is
	// exactly what GitOps applied, as its twin is.
	gitops()
	patch = client.MergeFrom(cert.DeepCopy())
	cert.Spec.Inject = slices.DeleteFunc(cert.Spec.Inject, func(entry certpilotv1alpha1.InjectTarget) bool { return entry.Name == "web" })
	if err := kube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "web restored", func() error {
		template := get("web").Spec.Template
		if !equality.Semantic.DeepEqual(template, original) {
			return fmt.Errorf("web's pod template\n%s\nis not the original\n%s", toJSON(template), toJSON(original))
		}
		twin := get("web-twin").Spec.Template
		twin.Labels = template.Labels // the only difference between the manifests
		if !equality.Semantic.DeepEqual(template, twin) {
			return fmt.Errorf("web's pod template\n%s\ndiffers from its twin's\n%s", toJSON(template), toJSON(twin))
		}
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		if len(cert.Status.Injected) != 3 || slices.Contains(cert.Status.Injected, certpilotv1alpha1.InjectedWorkload{Kind: "Deployment", Name: "web"}) {
			return fmt.Errorf("status.injected %+v, want late, db and agent", cert.Status.Injected)
		}
		return nil
	})
	if err := hasSecretVolume(get("late").Spec.Template, "late", "/etc/tls", "inject-tls"); err != nil {
		t.Errorf("removing web's entries touched late: %v", err)
	}
	waitForEvents(t, cert, 10*time.Second, "Injected", "InjectionRemoved")
	for _, field := range get("web").ManagedFields {
		if strings.HasPrefix(field.Manager, "certpilot-inject-") {
			t.Errorf("certpilot still manages fields of web: %s %s", field.Manager, field.FieldsV1)
		}
	}
	scanWorkloads(t, ctx, ns)

	// Deleting the Certificate undoes its remaining injections before it goes: no workload is
	// left referring to the Secret that is garbage-collected with it.
	if err := kube.Client.Delete(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "Certificate gone and its injections undone", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err == nil {
			return fmt.Errorf("the Certificate still exists: finalizers %v, injected %+v", cert.Finalizers, cert.Status.Injected)
		}
		for _, obj := range []client.Object{&appsv1.Deployment{}, &appsv1.StatefulSet{}, &appsv1.DaemonSet{}} {
			for _, name := range []string{"late", "db", "agent"} {
				if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
					continue // not this kind
				}
				for _, field := range obj.GetManagedFields() {
					if strings.HasPrefix(field.Manager, "certpilot-inject-") {
						return fmt.Errorf("%T %s still has fields of %s", obj, name, field.Manager)
					}
				}
			}
		}
		return nil
	})
}

// gitopsDeployment is the manifest a GitOps tool applies: two containers, a variable of its own
// and, when asked, more variables.
func gitopsDeployment(namespace, name string, extraEnv ...string) *appsv1ac.DeploymentApplyConfiguration {
	labels := map[string]string{"app": name}
	app := corev1ac.Container().WithName("app").WithImage("app:1").
		WithEnv(corev1ac.EnvVar().WithName("GITOPS").WithValue("yes"))
	for _, env := range extraEnv {
		app.WithEnv(corev1ac.EnvVar().WithName(env).WithValue("debug"))
	}
	return appsv1ac.Deployment(name, namespace).WithSpec(appsv1ac.DeploymentSpec().
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(labels)).
		WithTemplate(corev1ac.PodTemplateSpec().
			WithLabels(labels).
			WithAnnotations(map[string]string{"gitops.example.com/revision": "1"}).
			WithSpec(corev1ac.PodSpec().WithContainers(app, corev1ac.Container().WithName("sidecar").WithImage("sidecar:1")))))
}

func hasEnv(template corev1.PodTemplateSpec, container, name string) bool {
	for _, c := range template.Spec.Containers {
		if c.Name == container {
			for _, env := range c.Env {
				if env.Name == name {
					return true
				}
			}
		}
	}
	return false
}

// hasEnvRef checks that a container's variable refers to the Secret's bundle, by reference only.
func hasEnvRef(template corev1.PodTemplateSpec, container, name, secret string) error {
	for _, c := range template.Spec.Containers {
		if c.Name != container {
			continue
		}
		for _, env := range c.Env {
			if env.Name != name {
				continue
			}
			ref := env.ValueFrom
			if env.Value != "" || ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != secret || ref.SecretKeyRef.Key != certpilotv1alpha1.BundleKey {
				return fmt.Errorf("variable %s is %s, want a secretKeyRef to %s/%s", name, toJSON(env), secret, certpilotv1alpha1.BundleKey)
			}
			return nil
		}
		return fmt.Errorf("container %s has no variable %s: %s", container, name, toJSON(c.Env))
	}
	return fmt.Errorf("no container %s", container)
}

// hasSecretVolume checks that a container mounts the Secret read-only at path, with its four keys.
func hasSecretVolume(template corev1.PodTemplateSpec, container, path, secret string) error {
	var volumeName string
	for _, c := range template.Spec.Containers {
		if c.Name != container {
			continue
		}
		for _, mount := range c.VolumeMounts {
			if mount.MountPath == path {
				if !mount.ReadOnly {
					return fmt.Errorf("mount %s is not read-only", path)
				}
				volumeName = mount.Name
			}
		}
	}
	if volumeName == "" {
		return fmt.Errorf("container %s mounts nothing at %s: %s", container, path, toJSON(template.Spec.Containers))
	}
	for _, volume := range template.Spec.Volumes {
		if volume.Name != volumeName {
			continue
		}
		if volume.Secret == nil || volume.Secret.SecretName != secret {
			return fmt.Errorf("volume %s is %s, want Secret %s", volumeName, toJSON(volume), secret)
		}
		var keys []string
		for _, item := range volume.Secret.Items {
			keys = append(keys, item.Key)
		}
		if want := "tls.crt,tls.key,ca.crt,bundle.pem"; strings.Join(keys, ",") != want {
			return fmt.Errorf("volume %s has keys %v, want %s", volumeName, keys, want)
		}
		return nil
	}
	return fmt.Errorf("no volume %s", volumeName)
}

// injectedCondition checks the Certificate's Injected condition.
func injectedCondition(ctx context.Context, cert *certpilotv1alpha1.Certificate, status metav1.ConditionStatus, reason string) error {
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
		return err
	}
	condition := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionInjected)
	if condition == nil || condition.Status != status || condition.Reason != reason {
		return fmt.Errorf("Injected condition %+v, want %s %s", condition, status, reason)
	}
	return nil
}

// scanWorkloads fails when any workload object of the namespace holds key or certificate bytes.
func scanWorkloads(t *testing.T, ctx context.Context, namespace string) {
	t.Helper()
	lists := []client.ObjectList{&appsv1.DeploymentList{}, &appsv1.StatefulSetList{}, &appsv1.DaemonSetList{}}
	for _, list := range lists {
		if err := kube.Client.List(ctx, list, client.InNamespace(namespace)); err != nil {
			t.Fatal(err)
		}
		data := toJSON(list)
		for _, marker := range []string{"PRIVATE KEY", "BEGIN CERTIFICATE", "LS0tLS1CRUdJTi" /* base64 of "-----BEGIN" */} {
			if strings.Contains(data, marker) {
				t.Errorf("a workload holds %q: %s", marker, data)
			}
		}
	}
}

func toJSON(value any) string {
	data, err := json.Marshal(value)
	if err != nil {
		return fmt.Sprintf("%+v", value)
	}
	return string(data)
}
