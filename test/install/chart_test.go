package install

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

const (
	releaseName      = "certpilot"
	releaseNamespace = "certpilot-system"
)

// allOptions turns every option of the chart on.
func allOptions() map[string]any {
	return map[string]any{
		"image":                    map[string]any{"repository": "registry.example/certpilot", "tag": "v9.9.9", "pullPolicy": "Always"},
		"imagePullSecrets":         []any{map[string]any{"name": "registry"}},
		"replicas":                 3,
		"certificateWorkers":       8,
		"clusterResourceNamespace": "certpilot-secrets",
		"watchNamespaces":          []any{"team-a", "team-b"},
		"allowPrivateDials":        []any{"10.20.0.0/16", "fd00::/8"},
		"extraArgs":                []any{"--zap-log-level=debug"},
		"nodeSelector":             map[string]any{"kubernetes.io/os": "linux"},
		"tolerations":              []any{map[string]any{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}},
		"podAnnotations":           map[string]any{"example.com/team": "platform"},
		"metrics": map[string]any{"serviceMonitor": map[string]any{
			"enabled": true, "labels": map[string]any{"release": "prometheus"},
		}},
		"edge": map[string]any{
			"enabled":   true,
			"extraArgs": []any{"--shutdown-timeout=10s"},
			"service": map[string]any{
				"externalTrafficPolicy": "Local",
				"annotations":           map[string]any{"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
			},
		},
	}
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	chrt, err := loader.Load(repoPath(t, "charts", "certpilot"))
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return chrt
}

// renderChart renders the chart as `helm template` / `helm install` does (values checked against
// values.schema.json) and returns the objects of its templates and the rendered NOTES.
func renderChart(t *testing.T, values map[string]any) (objects []*unstructured.Unstructured, notes string) {
	t.Helper()
	rendered, err := testenv.RenderChart(testenv.ChartRelease{Name: releaseName, Namespace: releaseNamespace, Values: values})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(rendered))
	for name := range rendered {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			notes = rendered[name]
			continue
		}
		objects = append(objects, decodeManifests(t, name, []byte(rendered[name]))...)
	}
	return objects, notes
}

// chartCRDs returns the chart's crds/ as objects, which helm installs before the templates.
func chartCRDs(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	var objects []*unstructured.Unstructured
	for _, crd := range loadChart(t).CRDObjects() {
		objects = append(objects, decodeManifests(t, crd.Filename, crd.File.Data)...)
	}
	return objects
}

func TestChartLint(t *testing.T) {
	for name, values := range map[string]map[string]any{"defaults": nil, "all options": allOptions()} {
		t.Run(name, func(t *testing.T) {
			linter := lint.All(repoPath(t, "charts", "certpilot"), values, releaseNamespace, true)
			for _, message := range linter.Messages {
				if message.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", message)
				} else {
					t.Logf("helm lint: %s", message)
				}
			}
		})
	}
}

func TestChartCRDsAreConfigCRDs(t *testing.T) {
	bases := repoPath(t, "config", "crd", "bases")
	want, err := filepath.Glob(filepath.Join(bases, "*.yaml"))
	if err != nil || len(want) == 0 {
		t.Fatalf("no CRDs in %s: %v", bases, err)
	}
	crds := loadChart(t).CRDObjects()
	if len(crds) != len(want) {
		t.Errorf("the chart has %d CRDs, config/crd/bases %d", len(crds), len(want))
	}
	byName := map[string][]byte{}
	for _, crd := range crds {
		byName[filepath.Base(crd.Filename)] = crd.File.Data
	}
	for _, path := range want {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := byName[filepath.Base(path)]; !ok {
			t.Errorf("the chart misses %s", filepath.Base(path))
		} else if !bytes.Equal(got, data) {
			t.Errorf("charts/certpilot/crds/%s differs from config/crd/bases: run `make manifests`", filepath.Base(path))
		}
	}
}

func TestChartManagerRoleIsGenerated(t *testing.T) {
	want, err := os.ReadFile(repoPath(t, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(repoPath(t, "charts", "certpilot", "files", "manager-role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("charts/certpilot/files/manager-role.yaml differs from config/rbac/role.yaml: run `make manifests`")
	}
}

func TestChartSchemaRejectsBadValues(t *testing.T) {
	chrt := loadChart(t)
	for name, values := range map[string]map[string]any{
		"unknown key":                {"replica": 2},
		"no replicas":                {"replicas": 0},
		"privileged edge port":       {"edge": map[string]any{"containerPorts": map[string]any{"https": 443}}},
		"bad pull policy":            {"image": map[string]any{"pullPolicy": "Sometimes"}},
		"bad namespace":              {"watchNamespaces": []any{"Team_A"}},
		"bad service type":           {"edge": map[string]any{"service": map[string]any{"type": "ExternalName"}}},
		"unknown serviceMonitor key": {"metrics": map[string]any{"serviceMonitor": map[string]any{"enable": true}}},
		"unknown injection kind":     {"injection": map[string]any{"kinds": []any{"Pod"}}},
		"empty token audience":       {"metrics": map[string]any{"tokenAudiences": []any{""}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := chartutil.ToRenderValues(chrt, values, chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNamespace}, nil)
			if err == nil {
				t.Errorf("values %v were accepted", values)
			}
		})
	}
}

func TestChartDefaults(t *testing.T) {
	objects, notes := renderChart(t, nil)
	index := objectsByKind(objects)
	for _, key := range []string{
		"ServiceAccount certpilot-system/certpilot",
		"ClusterRole /certpilot-manager",
		"ClusterRoleBinding /certpilot-manager",
		"Role certpilot-system/certpilot-leader-election",
		"RoleBinding certpilot-system/certpilot-leader-election",
		"Deployment certpilot-system/certpilot",
		"PodDisruptionBudget certpilot-system/certpilot",
		"Service certpilot-system/certpilot-metrics",
		"ClusterRole /certpilot-metrics-reader",
	} {
		if index[key] == nil {
			t.Errorf("missing %s", key)
		}
	}
	if len(index) != 9 {
		t.Errorf("rendered %d objects, want 9 (no edge, no ServiceMonitor, no Roles per namespace): %v", len(index), keys(index))
	}

	deployment := index["Deployment certpilot-system/certpilot"]
	if replicas, _, _ := unstructured.NestedInt64(deployment.Object, "spec", "replicas"); replicas != 2 {
		t.Errorf("replicas = %d, want 2", replicas)
	}
	container := firstContainer(t, deployment)
	args, _, _ := unstructured.NestedStringSlice(container, "args")
	for _, want := range []string{"--leader-elect=true", "--metrics-bind-address=:8443", "--metrics-secure=true", "--cluster-resource-namespace=certpilot-system"} {
		if !slices.Contains(args, want) {
			t.Errorf("manager args %v miss %s", args, want)
		}
	}
	if image, _, _ := unstructured.NestedString(container, "image"); image != "certpilot:0.1.0" {
		t.Errorf("image = %q, want the appVersion tag", image)
	}
	assertRestricted(t, deployment)
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if _, ok, _ := unstructured.NestedMap(container, probe); !ok {
			t.Errorf("manager has no %s", probe)
		}
	}
	if _, ok, _ := unstructured.NestedMap(container, "resources", "requests"); !ok {
		t.Error("manager has no resource requests")
	}

	// The ClusterRole holds exactly the generated rules.
	roleFile, err := os.ReadFile(repoPath(t, "charts", "certpilot", "files", "manager-role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var generated struct {
		Rules []any `json:"rules"`
	}
	if err := yaml.Unmarshal(roleFile, &generated); err != nil {
		t.Fatal(err)
	}
	rules, _, _ := unstructured.NestedSlice(index["ClusterRole /certpilot-manager"].Object, "rules")
	if got, want := mustJSON(t, rules), mustJSON(t, generated.Rules); got != want {
		t.Errorf("ClusterRole rules\n%s\nwant the generated\n%s", got, want)
	}

	for _, want := range []string{"kind: ClusterIssuer", "kind: Certificate", "kubectl certpilot ls", "edge.enabled=true"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES miss %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "WARNING") {
		t.Errorf("NOTES warn with default values:\n%s", notes)
	}
}

func TestChartAllOptions(t *testing.T) {
	objects, notes := renderChart(t, allOptions())
	index := objectsByKind(objects)
	if index["ClusterRole /certpilot-manager"] != nil {
		t.Error("with watchNamespaces the manager still gets the cluster-wide ClusterRole")
	}
	// Namespaced rules in Roles of each watched namespace, the release namespace and the cluster
	// resource namespace (which the manager watches too); only the cluster-scoped resources
	// (ClusterIssuers, Namespaces, the reviews of metrics.secure) cluster-wide: a Role cannot grant them.
	// Together they grant exactly the generated rules.
	granted := map[string]bool{}
	clusterScoped := []string{"certpilot.dev/clusterissuers", "/namespaces", "authentication.k8s.io/tokenreviews", "authorization.k8s.io/subjectaccessreviews"}
	isClusterScoped := func(pair string) bool {
		resource, _, _ := strings.Cut(pair, " ")
		resource, _, _ = strings.Cut(resource, "/status")
		return slices.Contains(clusterScoped, resource)
	}
	clusterRules, _, _ := unstructured.NestedSlice(index["ClusterRole /certpilot-manager-cluster"].Object, "rules")
	for _, pair := range rulePairs(clusterRules) {
		if !isClusterScoped(pair) {
			t.Errorf("the manager's ClusterRole grants %s, on a namespaced resource", pair)
		}
		granted[pair] = true
	}
	for _, want := range clusterScoped {
		if !slices.ContainsFunc(rulePairs(clusterRules), func(pair string) bool { return strings.HasPrefix(pair, want+" ") }) {
			t.Errorf("the manager's ClusterRole grants nothing on %s", want)
		}
	}
	for _, namespace := range []string{"team-a", "team-b", releaseNamespace, "certpilot-secrets"} {
		role := index["Role "+namespace+"/certpilot-manager"]
		if role == nil || index["RoleBinding "+namespace+"/certpilot-manager"] == nil {
			t.Errorf("no Role and RoleBinding certpilot-manager in %s", namespace)
			continue
		}
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		for _, pair := range rulePairs(rules) {
			if isClusterScoped(pair) {
				t.Errorf("Role in %s grants %s, which a Role cannot", namespace, pair)
			}
			granted[pair] = true
		}
	}
	generatedRole := decodeManifests(t, "manager-role.yaml", mustRead(t, repoPath(t, "charts", "certpilot", "files", "manager-role.yaml")))[0]
	generatedRules, _, _ := unstructured.NestedSlice(generatedRole.Object, "rules")
	want := rulePairs(generatedRules)
	got := keysOf(granted)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("namespaced RBAC grants\n%s\nwant the generated rules\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	if index["ServiceMonitor certpilot-system/certpilot"] == nil {
		t.Error("no ServiceMonitor")
	}
	edge := index["Deployment certpilot-system/certpilot-edge"]
	if edge == nil {
		t.Fatalf("no edge Deployment: %v", keys(index))
	}
	assertRestricted(t, edge)
	container := firstContainer(t, edge)
	args, _, _ := unstructured.NestedStringSlice(container, "args")
	for _, want := range []string{
		"--namespace=certpilot-system", "--load-balancer=certpilot-edge",
		"--https-bind-address=:8443", "--http-bind-address=:8080", "--shutdown-timeout=10s",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("edge args %v miss %s", args, want)
		}
	}
	service := index["Service certpilot-system/certpilot-edge"]
	ports, _, _ := unstructured.NestedSlice(service.Object, "spec", "ports")
	if got := mustJSON(t, ports); got != `[{"name":"https","port":443,"protocol":"TCP","targetPort":"https"},{"name":"http","port":80,"protocol":"TCP","targetPort":"http"}]` {
		t.Errorf("edge Service ports %s", got)
	}
	edgeRole, _, _ := unstructured.NestedSlice(index["Role certpilot-system/certpilot-edge"].Object, "rules")
	if got := mustJSON(t, edgeRole); got != `[{"apiGroups":[""],"resourceNames":["certpilot-edge-acme-challenges",`+edgeShardNames()+`],"resources":["secrets"],"verbs":["get","list","watch"]}]` {
		t.Errorf("edge Role rules %s", got)
	}
	manager := firstContainer(t, index["Deployment certpilot-system/certpilot"])
	if image, _, _ := unstructured.NestedString(manager, "image"); image != "registry.example/certpilot:v9.9.9" {
		t.Errorf("image = %q", image)
	}
	managerArgs, _, _ := unstructured.NestedStringSlice(manager, "args")
	for _, want := range []string{"--certificate-workers=8", "--cluster-resource-namespace=certpilot-secrets", "--zap-log-level=debug", "--watch-namespaces=team-a,team-b", "--allow-private-dials=10.20.0.0/16,fd00::/8"} {
		if !slices.Contains(managerArgs, want) {
			t.Errorf("manager args %v miss %s", managerArgs, want)
		}
	}
	for _, want := range []string{"The manager watches only team-a, team-b and certpilot-secrets", "name: certpilot-edge", "ServiceMonitor certpilot created"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES miss %q:\n%s", want, notes)
		}
	}
}

// TestChartDryRun installs the chart's CRDs and every rendered object with a server-side dry-run.
func TestChartDryRun(t *testing.T) {
	testenv.SkipIfShort(t)
	for name, values := range map[string]map[string]any{"defaults": nil, "all options": allOptions()} {
		t.Run(name, func(t *testing.T) {
			if name == "all options" {
				installServiceMonitorCRD(t)
			}
			objects, _ := renderChart(t, values)
			for _, namespace := range []string{releaseNamespace, "certpilot-secrets", "team-a", "team-b"} {
				ensureNamespace(t, namespace)
			}
			dryRunApply(t, append(chartCRDs(t), objects...))
		})
	}
}

func firstContainer(t *testing.T, deployment *unstructured.Unstructured) map[string]any {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(deployment.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("%s has %d containers, want 1", deployment.GetName(), len(containers))
	}
	return containers[0].(map[string]any)
}

// assertRestricted checks the restricted Pod Security settings the chart promises (the
// apiserver's Pod Security admission checks them again in TestChartDryRun).
func assertRestricted(t *testing.T, deployment *unstructured.Unstructured) {
	t.Helper()
	pod, _, _ := unstructured.NestedMap(deployment.Object, "spec", "template", "spec")
	for path, want := range map[string]any{
		"securityContext.runAsNonRoot":        true,
		"securityContext.seccompProfile.type": "RuntimeDefault",
	} {
		if got, _, _ := unstructured.NestedFieldNoCopy(pod, strings.Split(path, ".")...); got != want {
			t.Errorf("%s: pod %s = %v, want %v", deployment.GetName(), path, got, want)
		}
	}
	container := firstContainer(t, deployment)
	for path, want := range map[string]any{
		"securityContext.allowPrivilegeEscalation": false,
		"securityContext.readOnlyRootFilesystem":   true,
		"securityContext.runAsNonRoot":             true,
	} {
		if got, _, _ := unstructured.NestedFieldNoCopy(container, strings.Split(path, ".")...); got != want {
			t.Errorf("%s: container %s = %v, want %v", deployment.GetName(), path, got, want)
		}
	}
	if drop, _, _ := unstructured.NestedStringSlice(container, "securityContext", "capabilities", "drop"); !slices.Equal(drop, []string{"ALL"}) {
		t.Errorf("%s: capabilities.drop = %v, want [ALL]", deployment.GetName(), drop)
	}
	if add, ok, _ := unstructured.NestedSlice(container, "securityContext", "capabilities", "add"); ok {
		t.Errorf("%s: adds capabilities %v", deployment.GetName(), add)
	}
}

// rulePairs flattens RBAC rules to sorted "group/resource verb" lines.
func rulePairs(rules []any) []string {
	set := map[string]bool{}
	for _, rule := range rules {
		rule := rule.(map[string]any)
		groups, _, _ := unstructured.NestedStringSlice(rule, "apiGroups")
		resources, _, _ := unstructured.NestedStringSlice(rule, "resources")
		verbs, _, _ := unstructured.NestedStringSlice(rule, "verbs")
		for _, group := range groups {
			for _, resource := range resources {
				for _, verb := range verbs {
					set[group+"/"+resource+" "+verb] = true
				}
			}
		}
	}
	return keysOf(set)
}

func keysOf(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for key := range set {
		out = append(out, key)
	}
	sort.Strings(out)
	return out
}

func keys(index map[string]*unstructured.Unstructured) []string {
	out := make([]string, 0, len(index))
	for key := range index {
		out = append(out, key)
	}
	sort.Strings(out)
	return out
}

func mustJSON(t *testing.T, value any) string {
	t.Helper()
	data, err := yaml.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	json, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	return string(json)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// edgeShardNames is the chart edge's 32 challenge shards, as JSON list items.
func edgeShardNames() string {
	names := make([]string, certpilotv1alpha1.ChallengeShards)
	for i := range names {
		names[i] = strconv.Quote(certpilotv1alpha1.ChallengeShardName("certpilot-edge", i))
	}
	return strings.Join(names, ",")
}
