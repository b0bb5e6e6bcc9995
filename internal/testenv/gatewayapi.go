package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
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

// InstallGatewayAPI installs the Gateway API's standard CRDs and waits until they are served.
func InstallGatewayAPI(cfg *rest.Config) error {
	dir, err := GatewayAPICRDDir()
	if err != nil {
		return err
	}
	_, err = envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{dir}, ErrorIfPathMissing: true})
	return err
}

// UninstallGatewayAPI deletes the Gateway API's CRDs (and so every Gateway) and waits until they
// are gone.
func UninstallGatewayAPI(ctx context.Context, cfg *rest.Config) error {
	dir, err := GatewayAPICRDDir()
	if err != nil {
		return err
	}
	options := envtest.CRDInstallOptions{Paths: []string{dir}, ErrorIfPathMissing: true}
	if err := envtest.ReadCRDFiles(&options); err != nil {
		return err
	}
	if err := envtest.UninstallCRDs(cfg, options); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: NewScheme()})
	if err != nil {
		return err
	}
	return Poll(ctx, 2*time.Minute, func() error {
		for _, crd := range options.CRDs {
			err := c.Get(ctx, client.ObjectKey{Name: crd.Name}, &apiextensionsv1.CustomResourceDefinition{})
			if err == nil {
				return fmt.Errorf("CRD %s is still there", crd.Name)
			}
			if !apierrors.IsNotFound(err) {
				return err
			}
		}
		return nil
	})
}
