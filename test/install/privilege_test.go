package install

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// managerGrants returns the rules granted to the manager by the chart's ClusterRoles and Roles
// named <release>-manager*, as "group/resource verb" lines, and the manager's args.
func managerGrants(t *testing.T, values map[string]any) (granted, args []string) {
	t.Helper()
	objects, _ := renderChart(t, values)
	set := map[string]bool{}
	for _, object := range objects {
		if (object.GetKind() != "ClusterRole" && object.GetKind() != "Role") || !strings.HasPrefix(object.GetName(), releaseName+"-manager") {
			continue
		}
		rules, _, _ := unstructured.NestedSlice(object.Object, "rules")
		for _, pair := range rulePairs(rules) {
			set[pair] = true
		}
	}
	args, _, _ = unstructured.NestedStringSlice(firstContainer(t, objectsByKind(objects)["Deployment certpilot-system/certpilot"]), "args")
	return keysOf(set), args
}

// TestChartLeastPrivilege: the manager's RBAC follows its options. The reviews of secure metrics
// only with metrics.secure; StatefulSets and DaemonSets only when injection.kinds lists them,
// each with its --inject-kinds; Deployments always (the solvers read and patch load balancers).
func TestChartLeastPrivilege(t *testing.T) {
	reviews := []string{"authentication.k8s.io/tokenreviews create", "authorization.k8s.io/subjectaccessreviews create"}
	workloads := func(resource string) []string {
		return []string{"apps/" + resource + " get", "apps/" + resource + " list", "apps/" + resource + " watch", "apps/" + resource + " patch"}
	}
	deployments, statefulSets, daemonSets := workloads("deployments"), workloads("statefulsets"), workloads("daemonsets")
	for name, tc := range map[string]struct {
		values      map[string]any
		wantArgs    []string
		wantGranted [][]string
		wantDenied  [][]string
	}{
		"defaults": {
			wantArgs:    []string{"--metrics-secure=true", "--inject-kinds=Deployment,StatefulSet,DaemonSet"},
			wantGranted: [][]string{reviews, deployments, statefulSets, daemonSets},
		},
		"metrics not secure": {
			values:      map[string]any{"metrics": map[string]any{"secure": false, "tokenAudiences": []any{"certpilot-metrics"}}},
			wantArgs:    []string{"--metrics-secure=false"},
			wantGranted: [][]string{deployments, statefulSets, daemonSets},
			wantDenied:  [][]string{reviews},
		},
		"metrics audiences": {
			values:      map[string]any{"metrics": map[string]any{"tokenAudiences": []any{"certpilot-metrics", "prometheus"}}},
			wantArgs:    []string{"--metrics-secure=true", "--metrics-token-audiences=certpilot-metrics,prometheus"},
			wantGranted: [][]string{reviews},
		},
		"no injection": {
			values:      map[string]any{"injection": map[string]any{"kinds": []any{}}},
			wantArgs:    []string{"--inject-kinds="},
			wantGranted: [][]string{reviews, deployments},
			wantDenied:  [][]string{statefulSets, daemonSets},
		},
		"StatefulSets only, namespaced, metrics not secure": {
			values: map[string]any{
				"injection":       map[string]any{"kinds": []any{"StatefulSet"}},
				"metrics":         map[string]any{"secure": false},
				"watchNamespaces": []any{"team-a"},
			},
			wantArgs:    []string{"--inject-kinds=StatefulSet", "--metrics-secure=false", "--watch-namespaces=team-a"},
			wantGranted: [][]string{deployments, statefulSets},
			wantDenied:  [][]string{reviews, daemonSets},
		},
	} {
		t.Run(name, func(t *testing.T) {
			granted, args := managerGrants(t, tc.values)
			for _, want := range tc.wantArgs {
				if !slices.Contains(args, want) {
					t.Errorf("manager args %v miss %s", args, want)
				}
			}
			if !slices.Contains(args, "--metrics-secure=true") && slices.ContainsFunc(args, func(arg string) bool { return strings.HasPrefix(arg, "--metrics-token-audiences") }) {
				t.Errorf("manager args %v name token audiences without secure metrics", args)
			}
			for _, pairs := range tc.wantGranted {
				for _, pair := range pairs {
					if !slices.Contains(granted, pair) {
						t.Errorf("the manager is not granted %s", pair)
					}
				}
			}
			for _, pairs := range tc.wantDenied {
				for _, pair := range pairs {
					if slices.Contains(granted, pair) {
						t.Errorf("the manager is granted %s", pair)
					}
				}
			}
		})
	}
}

// TestChartNamespacedInstall: with watchNamespaces the manager's ServiceAccount is granted
// cluster-wide exactly the cluster-scoped rules docs/tenancy.md lists, and everything else only
// by RoleBindings in the watched, the release and the cluster resource namespaces.
func TestChartNamespacedInstall(t *testing.T) {
	clusterWide := []string{
		"certpilot.dev/clusterissuers get", "certpilot.dev/clusterissuers list", "certpilot.dev/clusterissuers watch",
		"certpilot.dev/clusterissuers/status patch", "/namespaces get",
	}
	reviews := []string{"authentication.k8s.io/tokenreviews create", "authorization.k8s.io/subjectaccessreviews create"}
	for name, tc := range map[string]struct {
		values          map[string]any
		wantClusterWide []string
		wantNamespaced  []string // a sample of the Roles' rules
		deniedAnywhere  []string
	}{
		"defaults": {
			values:          map[string]any{},
			wantClusterWide: append(slices.Clone(clusterWide), reviews...),
			wantNamespaced:  []string{"/secrets get", "/secrets patch", "apps/deployments patch", "apps/statefulsets patch", "apps/daemonsets patch", "certpilot.dev/certificates patch"},
		},
		"sources, no secure metrics, Deployments only": {
			values: map[string]any{
				"metrics":   map[string]any{"secure": false},
				"injection": map[string]any{"kinds": []any{"Deployment"}},
				"sources":   map[string]any{"ingress": map[string]any{"enabled": true}, "gateway": map[string]any{"enabled": true}},
			},
			wantClusterWide: clusterWide,
			wantNamespaced:  []string{"/secrets create", "apps/deployments get", "networking.k8s.io/ingresses watch", "certpilot.dev/certificates create"},
			deniedAnywhere:  append([]string{"apps/statefulsets get", "apps/daemonsets get"}, reviews...),
		},
	} {
		t.Run(name, func(t *testing.T) {
			values := map[string]any{"watchNamespaces": []any{"team-a", "team-b"}, "clusterResourceNamespace": "certpilot-secrets"}
			maps.Copy(values, tc.values)
			objects, _ := renderChart(t, values)
			roles := map[string][]string{} // "Kind namespace/name" → rule pairs
			for _, object := range objects {
				if object.GetKind() == "ClusterRole" || object.GetKind() == "Role" {
					rules, _, _ := unstructured.NestedSlice(object.Object, "rules")
					roles[object.GetKind()+" "+object.GetNamespace()+"/"+object.GetName()] = rulePairs(rules)
				}
			}
			clusterGranted, namespaced := map[string]bool{}, map[string]map[string]bool{}
			for _, object := range objects {
				kind := object.GetKind()
				if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
					continue
				}
				subjects, _, _ := unstructured.NestedSlice(object.Object, "subjects")
				if !slices.ContainsFunc(subjects, func(subject any) bool {
					s := subject.(map[string]any)
					return s["kind"] == "ServiceAccount" && s["name"] == releaseName && s["namespace"] == releaseNamespace
				}) {
					continue // another ServiceAccount's (the edge's)
				}
				refKind, _, _ := unstructured.NestedString(object.Object, "roleRef", "kind")
				refName, _, _ := unstructured.NestedString(object.Object, "roleRef", "name")
				refNamespace := ""
				if refKind == "Role" {
					refNamespace = object.GetNamespace()
				}
				pairs, found := roles[refKind+" "+refNamespace+"/"+refName]
				if !found {
					t.Errorf("%s %s names %s %s, which the chart does not render", kind, object.GetName(), refKind, refName)
				}
				for _, pair := range pairs {
					if kind == "ClusterRoleBinding" {
						clusterGranted[pair] = true
						continue
					}
					if namespaced[object.GetNamespace()] == nil {
						namespaced[object.GetNamespace()] = map[string]bool{}
					}
					namespaced[object.GetNamespace()][pair] = true
				}
			}
			if got, want := keysOf(clusterGranted), sortedCopy(tc.wantClusterWide); !slices.Equal(got, want) {
				t.Errorf("granted cluster-wide\n%s\nwant exactly\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if got, want := slices.Sorted(maps.Keys(namespaced)), []string{"certpilot-secrets", releaseNamespace, "team-a", "team-b"}; !slices.Equal(got, sortedCopy(want)) {
				t.Errorf("RoleBindings in %v, want %v", got, want)
			}
			for namespace, granted := range namespaced {
				for _, want := range tc.wantNamespaced {
					if !granted[want] {
						t.Errorf("not granted %s in %s", want, namespace)
					}
				}
				for _, denied := range tc.deniedAnywhere {
					if granted[denied] {
						t.Errorf("granted %s in %s", denied, namespace)
					}
				}
			}
		})
	}
}

func sortedCopy(items []string) []string {
	out := slices.Clone(items)
	slices.Sort(out)
	return out
}
