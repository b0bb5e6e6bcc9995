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

func TestKustomizeSamples(t *testing.T) {
	testenv.SkipIfShort(t)
	objects := buildKustomization(t, repoPath(t, "config", "samples"))
	if len(objects) == 0 {
		t.Fatal("config/samples renders nothing")
	}
	dryRunApply(t, objects)
}
