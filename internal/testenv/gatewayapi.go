package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// GatewayAPIModule is the Go module whose CRD manifests the tests install; its version is the
// one go.mod pins, so the CRDs always match the Go types certpilot compiles against.
const GatewayAPIModule = "sigs.k8s.io/gateway-api"

// GatewayAPICRDDir returns the standard-channel CRD manifests in the module cache
// (config/crd/standard of the pinned sigs.k8s.io/gateway-api), downloading the module if needed.
func GatewayAPICRDDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "mod", "download", "-json", GatewayAPIModule)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", GatewayAPIModule, err)
	}
	var module struct{ Dir, Error string }
	if err := json.Unmarshal(out, &module); err != nil {
		return "", err
	}
	if module.Error != "" || module.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", GatewayAPIModule, module.Error)
	}
	return filepath.Join(module.Dir, "config", "crd", "standard"), nil
}

// gatewayAPIGroup is the API group of the Gateway API's CRDs.
const gatewayAPIGroup = "gateway.networking.k8s.io"

// gatewayAPICRDFiles are the standard-channel CRDs the tests install: what certpilot reads. The
// others (routes, policies) are not needed, and fewer CRDs make installing and deleting them in
// every run cheaper.
var gatewayAPICRDFiles = []string{"gateway.networking.k8s.io_gatewayclasses.yaml", "gateway.networking.k8s.io_gateways.yaml"}

// listenerSetCRDFile is the ListenerSet CRD, installed on its own (InstallListenerSet): the
// tests show that the manager runs without it and turns the ListenerSet source on when it
// appears, as on a cluster whose Gateway API predates v1.5.
const listenerSetCRDFile = "gateway.networking.k8s.io_listenersets.yaml"

// InstallGatewayAPI installs the Gateway API's GatewayClass and Gateway CRDs (the ones already
// there are left as they are) and waits until they are established, through c (a client of
// NewScheme, such as Kube.Client). It reads the manifests itself rather than through envtest,
// which logs through controller-runtime's logger (and so does a new client: tests that run late
// in a package would print controller-runtime's "SetLogger was never called" warning).
func InstallGatewayAPI(ctx context.Context, c client.Client) error {
	return installGatewayAPICRDs(ctx, c, gatewayAPICRDFiles)
}

// InstallListenerSet installs the Gateway API's ListenerSet CRD, as InstallGatewayAPI does the
// others.
func InstallListenerSet(ctx context.Context, c client.Client) error {
	return installGatewayAPICRDs(ctx, c, []string{listenerSetCRDFile})
}

func installGatewayAPICRDs(ctx context.Context, c client.Client, files []string) error {
	dir, err := GatewayAPICRDDir()
	if err != nil {
		return err
	}
	var names []string
	for _, name := range files {
		file := filepath.Join(dir, name)
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		for _, document := range strings.Split(string(data), "\n---") {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := yaml.Unmarshal([]byte(document), crd); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if crd.Kind != "CustomResourceDefinition" || crd.Spec.Group != gatewayAPIGroup {
				continue
			}
			if err := c.Create(ctx, crd); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
			}
			names = append(names, crd.Name)
		}
	}
	return Poll(ctx, time.Minute, func() error {
		for _, name := range names {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return err
			}
			established := false
			for _, condition := range crd.Status.Conditions {
				established = established || (condition.Type == apiextensionsv1.Established && condition.Status == apiextensionsv1.ConditionTrue)
			}
			if !established {
				return fmt.Errorf("CRD %s is not established", name)
			}
		}
		return nil
	})
}

// UninstallGatewayAPI deletes the Gateway API's CRDs (and so every Gateway) and waits until they
// are gone.
func UninstallGatewayAPI(ctx context.Context, c client.Client) error {
	gatewayCRDs := func() ([]apiextensionsv1.CustomResourceDefinition, error) {
		var list apiextensionsv1.CustomResourceDefinitionList
		if err := c.List(ctx, &list); err != nil {
			return nil, err
		}
		var crds []apiextensionsv1.CustomResourceDefinition
		for _, crd := range list.Items {
			if crd.Spec.Group == gatewayAPIGroup {
				crds = append(crds, crd)
			}
		}
		return crds, nil
	}
	crds, err := gatewayCRDs()
	if err != nil {
		return err
	}
	for i := range crds {
		if err := c.Delete(ctx, &crds[i]); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return Poll(ctx, 2*time.Minute, func() error {
		left, err := gatewayCRDs()
		if err != nil {
			return err
		}
		for i := range left {
			// A CRD deleted while its storage was still starting can stay Terminating: the
			// apiserver's finalizer failed to list its instances and backs off for minutes. Any
			// update of the CRD queues it again at once.
			if terminating := findCRDCondition(left[i], apiextensionsv1.Terminating); terminating != nil && terminating.Reason == "InstanceDeletionFailed" {
				nudge := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"annotations":{"certpilot.dev/nudged":%q}}}`, time.Now().Format(time.RFC3339Nano))))
				_ = c.Patch(ctx, &left[i], nudge)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%d Gateway API CRDs are still there, %s first (finalizers %v, conditions %+v)",
				len(left), left[0].Name, left[0].Finalizers, left[0].Status.Conditions)
		}
		return nil
	})
}

// findCRDCondition returns crd's condition of type t, nil when it has none.
func findCRDCondition(crd apiextensionsv1.CustomResourceDefinition, t apiextensionsv1.CustomResourceDefinitionConditionType) *apiextensionsv1.CustomResourceDefinitionCondition {
	for i := range crd.Status.Conditions {
		if crd.Status.Conditions[i].Type == t {
			return &crd.Status.Conditions[i]
		}
	}
	return nil
}
