package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ManagerUser is who the Stack's manager is to the apiserver: the ServiceAccount that
// config/rbac (and the Helm chart) bind certpilot's roles to, with its groups, authenticated
// by a client certificate of the test apiserver's CA. Every request it makes is authorized by
// those roles and nothing else: a permission the code needs and the generated ClusterRole lacks
// fails the tests that need it.
const ManagerUser = "system:serviceaccount:" + managerNamespace + ":" + managerServiceAccount

// The ServiceAccount config/rbac binds the manager's roles to.
const (
	managerNamespace      = "certpilot-system"
	managerServiceAccount = "certpilot-controller-manager"
)

// managerRBACFiles are the files under config/rbac that grant the manager its permissions
// cluster-wide (what config/default with config/components/injection installs: the stacks'
// managers inject into every kind), in the order they apply.
var managerRBACFiles = []string{"role.yaml", "role_binding.yaml", "source_role.yaml", "source_role_binding.yaml"}

// ManagerConfig returns base (an administrator's config for kube's apiserver, at the address
// the manager is to use) authenticating as ManagerUser instead.
func ManagerConfig(kube *Kube, base *rest.Config) (*rest.Config, error) {
	return serviceAccountConfig(kube, base, managerNamespace, managerServiceAccount)
}

// ServiceAccountUser is the user name the apiserver gives the tokens of ServiceAccount
// namespace/name.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// serviceAccountConfig returns base authenticating as ServiceAccount namespace/name, with the
// groups the apiserver gives its tokens (system:authenticated is added to every user), by a
// client certificate of kube's CA.
func serviceAccountConfig(kube *Kube, base *rest.Config, namespace, name string) (*rest.Config, error) {
	userName := ServiceAccountUser(namespace, name)
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace}
	user, err := kube.Env.AddUser(envtest.User{Name: userName, Groups: groups}, base)
	if err != nil {
		return nil, fmt.Errorf("a client certificate for %s: %w", userName, err)
	}
	return user.Config(), nil
}

// setUpManagerUser writes the manager's kubeconfig (at config's address) and grants its user
// its permissions, no more: ManagerUser with config/rbac's, its Lease (with --leader-elect) in
// the cluster resource namespace; with chartValues, the chart release of StackOptions.ChartValues
// with the chart's, and it returns the chart's flags that decide what the manager watches.
func (s *Stack) setUpManagerUser(ctx context.Context, config *rest.Config, chartValues map[string]any) (chartArgs []string, err error) {
	system := s.Namespace + "-system"
	release := ChartRelease{Name: s.Namespace, Namespace: system, Values: chartValues}
	var managerConfig *rest.Config
	if chartValues != nil {
		s.ManagerUser = release.User()
		managerConfig, err = serviceAccountConfig(s.Kube, config, release.Namespace, release.Name)
	} else {
		s.ManagerUser = ManagerUser
		managerConfig, err = ManagerConfig(s.Kube, config)
	}
	if err != nil {
		return nil, err
	}
	if err := WriteKubeconfig(managerConfig, s.ManagerKubeconfig); err != nil {
		return nil, err
	}
	if chartValues == nil {
		return nil, InstallManagerRBAC(ctx, s.Kube.Client, system)
	}
	managerArgs, err := installChartRBAC(ctx, s.Kube.Client, release)
	if err != nil {
		return nil, err
	}
	if want := "--cluster-resource-namespace=" + system; !slices.Contains(managerArgs, want) {
		return nil, fmt.Errorf("the chart's manager args %v lack %s: the stack keeps ClusterIssuers' Secrets there", managerArgs, want)
	}
	return chartFlags(managerArgs, chartWatchFlags), nil
}

// InstallManagerRBAC creates, or updates to what the files say, the ClusterRoles and
// ClusterRoleBindings of config/rbac, and the leader election Role and RoleBinding of
// config/rbac in leaseNamespace (the install puts them in certpilot-system, where its manager
// keeps its Lease; a Stack's manager keeps it in its cluster resource namespace). With
// leaseNamespace "", the manager may not elect a leader.
func InstallManagerRBAC(ctx context.Context, c client.Client, leaseNamespace string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	files := managerRBACFiles
	if leaseNamespace != "" {
		files = append(slices.Clone(files), "leader_election_role.yaml", "leader_election_role_binding.yaml")
	}
	var objects []client.Object
	for _, name := range files {
		decoded, err := decodeRBAC(filepath.Join(root, "config", "rbac", name))
		if err != nil {
			return err
		}
		objects = append(objects, decoded...)
	}
	for _, object := range objects {
		if object.GetNamespace() != "" {
			object.SetNamespace(leaseNamespace)
		}
		if err := createOrUpdate(ctx, c, object); err != nil {
			return fmt.Errorf("installing the manager's RBAC (%T %s): %w", object, object.GetName(), err)
		}
	}
	return nil
}

// decodeRBAC reads the Roles, ClusterRoles and their bindings in a YAML file of config/rbac.
func decodeRBAC(path string) ([]client.Object, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeRBACManifest(path, content, false)
}

// decodeRBACManifest reads the Roles, ClusterRoles and their bindings in a multi-document YAML
// stream from source, strictly (an unknown field is an error). Other kinds are an error, or
// skipped with skipOthers.
func decodeRBACManifest(source string, content []byte, skipOthers bool) ([]client.Object, error) {
	manifests, err := DecodeManifests(source, content)
	if err != nil {
		return nil, err
	}
	var objects []client.Object
	for _, manifest := range manifests {
		object, err := rbacObject(source, manifest)
		switch {
		case err != nil:
			return nil, err
		case object != nil:
			objects = append(objects, object)
		case !skipOthers:
			return nil, fmt.Errorf("%s: unexpected kind %q", source, manifest.GetKind())
		}
	}
	return objects, nil
}

// rbacObject returns manifest as a typed Role, ClusterRole or binding, or nil for another kind.
func rbacObject(source string, manifest *unstructured.Unstructured) (client.Object, error) {
	var object client.Object
	switch manifest.GetKind() {
	case "ClusterRole":
		object = &rbacv1.ClusterRole{}
	case "ClusterRoleBinding":
		object = &rbacv1.ClusterRoleBinding{}
	case "Role":
		object = &rbacv1.Role{}
	case "RoleBinding":
		object = &rbacv1.RoleBinding{}
	default:
		return nil, nil
	}
	return object, fromManifest(source, manifest, object)
}

// fromManifest converts manifest into the typed object, refusing unknown fields.
func fromManifest(source string, manifest *unstructured.Unstructured, object any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(manifest.Object, object, true); err != nil {
		return fmt.Errorf("%s: %s %s: %w", source, manifest.GetKind(), manifest.GetName(), err)
	}
	return nil
}

// createOrUpdate creates object, or replaces the rules or subjects of the one that exists
// (several stacks in one apiserver share the cluster-scoped roles).
func createOrUpdate(ctx context.Context, c client.Client, object client.Object) error {
	err := c.Create(ctx, object.DeepCopyObject().(client.Object))
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	current := object.DeepCopyObject().(client.Object)
	if err := c.Get(ctx, client.ObjectKeyFromObject(object), current); err != nil {
		return err
	}
	switch want := object.(type) {
	case *rbacv1.ClusterRole:
		current.(*rbacv1.ClusterRole).Rules = want.Rules
	case *rbacv1.Role:
		current.(*rbacv1.Role).Rules = want.Rules
	case *rbacv1.ClusterRoleBinding:
		current.(*rbacv1.ClusterRoleBinding).Subjects = want.Subjects
	case *rbacv1.RoleBinding:
		current.(*rbacv1.RoleBinding).Subjects = want.Subjects
	}
	return c.Update(ctx, current)
}
