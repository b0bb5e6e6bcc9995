package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ChartRelease is an install of charts/certpilot, rendered with helm's engine as `helm install`
// renders it (values checked against values.schema.json).
type ChartRelease struct {
	// Name is the release name. It names the chart's ServiceAccount and its RBAC objects, the
	// cluster-scoped ones too, which every test of an apiserver shares: give each test its own,
	// never "certpilot" (config/rbac's ClusterRoles are certpilot-manager and certpilot-source).
	Name string
	// Namespace is the release namespace.
	Namespace string
	// Values are the chart's values; nil: its defaults.
	Values map[string]any
}

// User is the ServiceAccount the chart runs the manager as, and binds its roles to: the
// release's name in the release namespace.
func (r ChartRelease) User() string { return ServiceAccountUser(r.Namespace, r.Name) }

// chartWatchFlags are the manager flags of the chart's Deployment that decide what the manager
// reads and watches, and so which of the chart's permissions it uses. A Stack with ChartValues
// passes them on; the others (leader election, metrics, workers) stay the Stack's.
var chartWatchFlags = []string{"--watch-namespaces", "--gateway-source", "--ingress-source", "--inject-kinds"}

// InstallChartRBAC creates, or updates to what the chart renders, the Roles, ClusterRoles and
// their bindings of release (the manager's, the sources', leader election, the metrics reader),
// binding them to release.User(): a subject that names another ServiceAccount is rewritten to
// it. The namespaces the Roles go in (watchNamespaces, the release and the cluster resource
// namespace) must exist.
// Names that config/rbac's cluster-scoped objects have are refused: those are shared by every
// other Stack of the apiserver.
func InstallChartRBAC(ctx context.Context, c client.Client, release ChartRelease) error {
	_, err := installChartRBAC(ctx, c, release)
	return err
}

// installChartRBAC is InstallChartRBAC, returning the args of the chart's manager container.
func installChartRBAC(ctx context.Context, c client.Client, release ChartRelease) (managerArgs []string, err error) {
	objects, managerArgs, err := renderChartRBAC(release)
	if err != nil {
		return nil, err
	}
	taken, err := configRBACClusterNames()
	if err != nil {
		return nil, err
	}
	for _, object := range objects {
		if object.GetNamespace() == "" && taken[fmt.Sprintf("%T %s", object, object.GetName())] {
			return nil, fmt.Errorf("release %q renders %T %s, which config/rbac installs too: choose another release name",
				release.Name, object, object.GetName())
		}
	}
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: release.Namespace, Name: release.Name}
	for _, object := range objects {
		switch binding := object.(type) {
		case *rbacv1.ClusterRoleBinding:
			binding.Subjects = bindServiceAccount(binding.Subjects, subject)
		case *rbacv1.RoleBinding:
			binding.Subjects = bindServiceAccount(binding.Subjects, subject)
		}
		if err := createOrUpdate(ctx, c, object); err != nil {
			return nil, fmt.Errorf("installing the chart's RBAC (%T %s/%s): %w", object, object.GetNamespace(), object.GetName(), err)
		}
	}
	return managerArgs, nil
}

// bindServiceAccount returns subjects with every ServiceAccount replaced by serviceAccount.
func bindServiceAccount(subjects []rbacv1.Subject, serviceAccount rbacv1.Subject) []rbacv1.Subject {
	out := make([]rbacv1.Subject, 0, len(subjects))
	for _, subject := range subjects {
		if subject.Kind == rbacv1.ServiceAccountKind {
			subject = serviceAccount
		}
		if !slices.Contains(out, subject) {
			out = append(out, subject)
		}
	}
	return out
}

// renderChartRBAC renders release and returns its RBAC objects and the args of its manager
// container.
func renderChartRBAC(release ChartRelease) (objects []client.Object, managerArgs []string, err error) {
	rendered, err := RenderChart(release)
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(rendered))
	for name := range rendered {
		if !strings.HasSuffix(name, "NOTES.txt") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	foundManager := false
	for _, name := range names {
		manifests, err := DecodeManifests(name, []byte(rendered[name]))
		if err != nil {
			return nil, nil, err
		}
		for _, manifest := range manifests {
			if object, err := rbacObject(name, manifest); err != nil {
				return nil, nil, err
			} else if object != nil {
				objects = append(objects, object)
				continue
			}
			if manifest.GetKind() != "Deployment" {
				continue
			}
			var deployment appsv1.Deployment
			if err := fromManifest(name, manifest, &deployment); err != nil {
				return nil, nil, err
			}
			for _, container := range deployment.Spec.Template.Spec.Containers {
				if container.Name == "manager" {
					managerArgs, foundManager = container.Args, true
				}
			}
		}
	}
	if !foundManager {
		return nil, nil, fmt.Errorf("the chart rendered no Deployment with a manager container")
	}
	return objects, managerArgs, nil
}

// chartFlags returns the args among managerArgs that set one of flags (as --flag=value).
func chartFlags(managerArgs, flags []string) []string {
	var out []string
	for _, arg := range managerArgs {
		name, _, _ := strings.Cut(arg, "=")
		if slices.Contains(flags, name) {
			out = append(out, arg)
		}
	}
	return out
}

// configRBACClusterNames returns the ClusterRoles and ClusterRoleBindings of config/rbac, as
// "<Go type> <name>".
func configRBACClusterNames() (map[string]bool, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "rbac", "*.yaml"))
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, file := range files {
		content, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		objects, err := decodeRBACManifest(file, content, true)
		if err != nil {
			return nil, err
		}
		for _, object := range objects {
			if object.GetNamespace() == "" {
				names[fmt.Sprintf("%T %s", object, object.GetName())] = true
			}
		}
	}
	return names, nil
}
