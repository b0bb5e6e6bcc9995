package install

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/certpilot/certpilot/internal/testenv"
)

// TestChartSources: the Gateway and Ingress sources get their RBAC and their manager flag only
// when enabled; both enabled grant exactly config/rbac/source_role.yaml (what kustomize
// installs), and with watchNamespaces everything but reading ClusterIssuers is namespaced.
func TestChartSources(t *testing.T) {
	sourceRole := decodeManifests(t, "source_role.yaml", mustRead(t, repoPath(t, "config", "rbac", "source_role.yaml")))[0]
	sourceRules, _, _ := unstructured.NestedSlice(sourceRole.Object, "rules")
	want := rulePairs(sourceRules)

	for name, tc := range map[string]struct {
		gateway, ingress bool
		watchNamespaces  []any
		wantFlags        []string
		wantGranted      []string
		wantDenied       []string
	}{
		"defaults: off": {
			wantFlags:  []string{"--gateway-source=false", "--ingress-source=false"},
			wantDenied: []string{"gateway.networking.k8s.io/gateways list", "networking.k8s.io/ingresses list", "certpilot.dev/certificates create"},
		},
		"gateway only": {
			gateway:     true,
			wantFlags:   []string{"--gateway-source=true", "--ingress-source=false"},
			wantGranted: []string{"gateway.networking.k8s.io/gateways watch", "certpilot.dev/certificates delete", "events.k8s.io/events create"},
			wantDenied:  []string{"networking.k8s.io/ingresses list"},
		},
		"ingress only": {
			ingress:     true,
			wantFlags:   []string{"--gateway-source=false", "--ingress-source=true"},
			wantGranted: []string{"networking.k8s.io/ingresses watch", "certpilot.dev/certificates create"},
			wantDenied:  []string{"gateway.networking.k8s.io/gateways list"},
		},
		"both": {
			gateway: true, ingress: true,
			wantFlags:   []string{"--gateway-source=true", "--ingress-source=true"},
			wantGranted: want,
		},
		"both, namespaced": {
			gateway: true, ingress: true, watchNamespaces: []any{"team-a"},
			wantFlags:   []string{"--gateway-source=true", "--ingress-source=true"},
			wantGranted: want,
		},
	} {
		t.Run(name, func(t *testing.T) {
			values := map[string]any{"sources": map[string]any{
				"gateway": map[string]any{"enabled": tc.gateway},
				"ingress": map[string]any{"enabled": tc.ingress},
			}}
			if tc.watchNamespaces != nil {
				values["watchNamespaces"] = tc.watchNamespaces
			}
			objects, _ := renderChart(t, values)
			index := objectsByKind(objects)
			args, _, _ := unstructured.NestedStringSlice(firstContainer(t, index["Deployment certpilot-system/certpilot"]), "args")
			for _, flag := range tc.wantFlags {
				if !slices.Contains(args, flag) {
					t.Errorf("manager args %v miss %s", args, flag)
				}
			}

			granted := map[string]bool{}
			for key, object := range index {
				if !strings.HasSuffix(key, "/certpilot-source") || (object.GetKind() != "ClusterRole" && object.GetKind() != "Role") {
					continue
				}
				rules, _, _ := unstructured.NestedSlice(object.Object, "rules")
				for _, pair := range rulePairs(rules) {
					granted[pair] = true
					if object.GetKind() == "ClusterRole" && tc.watchNamespaces != nil && !strings.HasPrefix(pair, "certpilot.dev/clusterissuers ") {
						t.Errorf("with watchNamespaces the source ClusterRole grants %s", pair)
					}
				}
			}
			if tc.watchNamespaces != nil && index["Role team-a/certpilot-source"] == nil {
				t.Errorf("no source Role in team-a: %v", keys(index))
			}
			for _, pair := range tc.wantGranted {
				if !granted[pair] {
					t.Errorf("not granted: %s (granted %v)", pair, keysOf(granted))
				}
			}
			for _, pair := range tc.wantDenied {
				if granted[pair] {
					t.Errorf("granted though disabled: %s", pair)
				}
			}
			if tc.gateway && tc.ingress {
				if got := keysOf(granted); !slices.Equal(got, want) {
					t.Errorf("the sources are granted\n%s\nwant config/rbac/source_role.yaml's\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
		})
	}

	// The API accepts what the chart renders with both sources on, cluster-wide and namespaced.
	testenv.SkipIfShort(t)
	for _, namespaces := range [][]any{nil, {"team-a"}} {
		values := map[string]any{"sources": map[string]any{
			"gateway": map[string]any{"enabled": true}, "ingress": map[string]any{"enabled": true},
		}}
		if namespaces != nil {
			values["watchNamespaces"] = namespaces
		}
		objects, _ := renderChart(t, values)
		for _, namespace := range []string{releaseNamespace, "team-a"} {
			ensureNamespace(t, namespace)
		}
		dryRunApply(t, append(chartCRDs(t), objects...))
	}
}
