package install

import (
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
