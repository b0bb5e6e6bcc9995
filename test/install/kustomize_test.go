package install

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/certpilot/certpilot/internal/testenv"
)

// buildKustomization renders a kustomization as `kubectl apply -k` / `kustomize build` does.
func buildKustomization(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	manifest, err := resources.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifests(t, dir, manifest)
}

func TestKustomizeDefault(t *testing.T) {
	objects := buildKustomization(t, repoPath(t, "config", "default"))
	index := objectsByKind(objects)
	for _, key := range []string{
		"Namespace /certpilot-system",
		"CustomResourceDefinition /certificates.certpilot.dev",
		"CustomResourceDefinition /issuers.certpilot.dev",
		"CustomResourceDefinition /clusterissuers.certpilot.dev",
		"ServiceAccount certpilot-system/certpilot-controller-manager",
		"ClusterRole /certpilot-manager",
		"ClusterRoleBinding /certpilot-manager",
		"Role certpilot-system/certpilot-leader-election",
		"RoleBinding certpilot-system/certpilot-leader-election",
		"Deployment certpilot-system/certpilot-controller-manager",
		"Service certpilot-system/certpilot-controller-manager-metrics",
		"ClusterRole /certpilot-metrics-reader",
	} {
		if index[key] == nil {
			t.Errorf("config/default misses %s; it renders %v", key, keys(index))
		}
	}
	// Bindings name what exists after the name prefix.
	for key, roleKey := range map[string]string{
		"ClusterRoleBinding /certpilot-manager":                  "ClusterRole /",
		"RoleBinding certpilot-system/certpilot-leader-election": "Role certpilot-system/",
	} {
		binding := index[key]
		if binding == nil {
			continue
		}
		roleName, _, _ := unstructured.NestedString(binding.Object, "roleRef", "name")
		if index[roleKey+roleName] == nil {
			t.Errorf("%s refers to %s%s, which config/default does not render", key, roleKey, roleName)
		}
		subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
		for _, subject := range subjects {
			subject := subject.(map[string]any)
			if index["ServiceAccount "+subject["namespace"].(string)+"/"+subject["name"].(string)] == nil {
				t.Errorf("%s binds %v, which config/default does not render", key, subject)
			}
		}
	}
	if deployment := index["Deployment certpilot-system/certpilot-controller-manager"]; deployment != nil {
		assertRestricted(t, deployment)
		container := firstContainer(t, deployment)
		args, _, _ := unstructured.NestedStringSlice(container, "args")
		if !slices.Contains(args, "--leader-elect") {
			t.Errorf("manager args %v miss --leader-elect", args)
		}
		if account, _, _ := unstructured.NestedString(deployment.Object, "spec", "template", "spec", "serviceAccountName"); index["ServiceAccount certpilot-system/"+account] == nil {
			t.Errorf("the manager runs as ServiceAccount %q, which config/default does not render", account)
		}
	}

	testenv.SkipIfShort(t)
	// The Namespace comes first and must exist for real before its objects can be dry-run.
	var rest []*unstructured.Unstructured
	for _, object := range objects {
		if object.GetKind() == "Namespace" {
			ensureNamespace(t, object.GetName())
			continue
		}
		rest = append(rest, object)
	}
	dryRunApply(t, rest)
}

// TestKustomizeMetrics checks that config/default serves the manager's metrics as the chart's
// default does (metrics.secure): HTTPS on 8443 to clients the apiserver authenticates and
// authorises, who are granted the reader ClusterRole the chart renders.
func TestKustomizeMetrics(t *testing.T) {
	index := objectsByKind(buildKustomization(t, repoPath(t, "config", "default")))
	deployment := index["Deployment certpilot-system/certpilot-controller-manager"]
	service := index["Service certpilot-system/certpilot-controller-manager-metrics"]
	readerRole := index["ClusterRole /certpilot-metrics-reader"]
	if deployment == nil || service == nil || readerRole == nil {
		t.Fatalf("config/default misses the manager, its metrics Service or the metrics reader ClusterRole; it renders %v", keys(index))
	}

	container := firstContainer(t, deployment)
	args, _, _ := unstructured.NestedStringSlice(container, "args")
	for _, want := range []string{"--metrics-bind-address=:8443", "--metrics-secure"} {
		if !slices.Contains(args, want) {
			t.Errorf("manager args %v miss %s", args, want)
		}
	}
	containerPorts, _, _ := unstructured.NestedSlice(container, "ports")
	metricsPort := int64(0)
	for _, port := range containerPorts {
		if port := port.(map[string]any); port["name"] == "metrics" {
			metricsPort, _ = port["containerPort"].(int64)
		}
	}
	if metricsPort != 8443 {
		t.Errorf("manager ports %s, want one named metrics on 8443", mustJSON(t, containerPorts))
	}
	servicePorts, _, _ := unstructured.NestedSlice(service.Object, "spec", "ports")
	if got := mustJSON(t, servicePorts); got != `[{"name":"metrics","port":8443,"protocol":"TCP","targetPort":"metrics"}]` {
		t.Errorf("metrics Service ports %s, want metrics on 8443 to the container's metrics port", got)
	}

	chartObjects, _ := renderChart(t, nil)
	chartRole := objectsByKind(chartObjects)["ClusterRole /certpilot-metrics-reader"]
	if chartRole == nil {
		t.Fatal("the chart renders no metrics reader ClusterRole by default")
	}
	got, _, _ := unstructured.NestedSlice(readerRole.Object, "rules")
	want, _, _ := unstructured.NestedSlice(chartRole.Object, "rules")
	if mustJSON(t, got) != mustJSON(t, want) {
		t.Errorf("certpilot-metrics-reader grants\n%s\nwant the chart's\n%s", mustJSON(t, got), mustJSON(t, want))
	}
}

func TestKustomizeSamples(t *testing.T) {
	testenv.SkipIfShort(t)
	objects := buildKustomization(t, repoPath(t, "config", "samples"))
	if len(objects) == 0 {
		t.Fatal("config/samples renders nothing")
	}
	dryRunApply(t, objects)
}
