package install

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// kustomizeManagerGrants builds config/default with components (names under
// config/components) through an overlay, as a user would, and returns the rules granted to
// the ClusterRole certpilot-manager as "group/resource verb" lines, the manager's args and
// the rendered objects.
func kustomizeManagerGrants(t *testing.T, components ...string) (granted, args []string, index map[string]*unstructured.Unstructured) {
	t.Helper()
	dir := repoPath(t, "config", "default")
	if len(components) > 0 {
		overlay := t.TempDir()
		rel := func(elem ...string) string {
			path, err := filepath.Rel(overlay, repoPath(t, append([]string{"config"}, elem...)...))
			if err != nil {
				t.Fatal(err)
			}
			return path
		}
		kustomization := "resources: [" + rel("default") + "]\ncomponents:\n"
		for _, component := range components {
			kustomization += "  - " + rel("components", component) + "\n"
		}
		if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o600); err != nil {
			t.Fatal(err)
		}
		dir = overlay
	}
	index = objectsByKind(buildKustomization(t, dir))
	role := index["ClusterRole /certpilot-manager"]
	if role == nil {
		t.Fatalf("no ClusterRole certpilot-manager; rendered %v", keys(index))
	}
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	args, _, _ = unstructured.NestedStringSlice(firstContainer(t, index["Deployment certpilot-system/certpilot-controller-manager"]), "args")
	return rulePairs(rules), args, index
}

// lastFlag is the value the manager sees for a flag given in args (the last occurrence).
func lastFlag(args []string, name string) (string, bool) {
	value, found := "", false
	for _, arg := range args {
		if arg == "--"+name {
			value, found = "true", true
		} else if v, ok := strings.CutPrefix(arg, "--"+name+"="); ok {
			value, found = v, true
		}
	}
	return value, found
}

// TestKustomizeLeastPrivilege: config/default grants the manager config/rbac/role.yaml less
// StatefulSets and DaemonSets, with --inject-kinds=Deployment; the injection component grants
// them back with the flag that uses them, and with it config/default grants exactly the
// generated role, as the chart's defaults do; the plain-metrics component drops the reviews of
// secure metrics with the flag. Each install grants exactly what the chart grants for the same
// options.
func TestKustomizeLeastPrivilege(t *testing.T) {
	generatedRole := decodeManifests(t, "role.yaml", mustRead(t, repoPath(t, "config", "rbac", "role.yaml")))[0]
	generatedRules, _, _ := unstructured.NestedSlice(generatedRole.Object, "rules")
	for name, tc := range map[string]struct {
		components      []string
		chartValues     map[string]any
		wantInjectKinds string
		wantSecure      string
		wantGenerated   bool
	}{
		"default": {
			chartValues:     map[string]any{"injection": map[string]any{"kinds": []any{"Deployment"}}},
			wantInjectKinds: "Deployment", wantSecure: "true",
		},
		"injection": {
			components:      []string{"injection"},
			wantInjectKinds: "Deployment,StatefulSet,DaemonSet", wantSecure: "true", wantGenerated: true,
		},
		"plain metrics": {
			components: []string{"plain-metrics"},
			chartValues: map[string]any{"injection": map[string]any{"kinds": []any{"Deployment"}},
				"metrics": map[string]any{"secure": false}},
			wantInjectKinds: "Deployment", wantSecure: "false",
		},
		"injection and plain metrics": {
			components:      []string{"injection", "plain-metrics"},
			chartValues:     map[string]any{"metrics": map[string]any{"secure": false}},
			wantInjectKinds: "Deployment,StatefulSet,DaemonSet", wantSecure: "false",
		},
	} {
		t.Run(name, func(t *testing.T) {
			granted, args, index := kustomizeManagerGrants(t, tc.components...)
			if got, _ := lastFlag(args, "inject-kinds"); got != tc.wantInjectKinds {
				t.Errorf("the manager runs with --inject-kinds=%s (args %v), want %s", got, args, tc.wantInjectKinds)
			}
			if got, _ := lastFlag(args, "metrics-secure"); got != tc.wantSecure {
				t.Errorf("the manager runs with --metrics-secure=%s (args %v), want %s", got, args, tc.wantSecure)
			}
			if (index["ClusterRole /certpilot-metrics-reader"] != nil) != (tc.wantSecure == "true") {
				t.Errorf("the metrics reader ClusterRole is rendered: %v, want it only with secure metrics", index["ClusterRole /certpilot-metrics-reader"] != nil)
			}
			if tc.wantGenerated && !slices.Equal(granted, rulePairs(generatedRules)) {
				t.Errorf("the manager is granted\n%v\nwant config/rbac/role.yaml's\n%v", granted, rulePairs(generatedRules))
			}
			chartGranted, chartArgs := managerGrants(t, tc.chartValues)
			if !slices.Equal(granted, chartGranted) {
				t.Errorf("the manager is granted\n%v\nwant what the chart grants with %v (args %v)\n%v", granted, tc.chartValues, chartArgs, chartGranted)
			}
			if got, _ := lastFlag(chartArgs, "inject-kinds"); got != tc.wantInjectKinds {
				t.Errorf("the chart's manager runs with --inject-kinds=%s, want %s as kustomize's", got, tc.wantInjectKinds)
			}
		})
	}
}
