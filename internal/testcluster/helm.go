package testcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/certpilot/certpilot/internal/testenv"
)

// CertpilotImage is the image hack/build-image.sh builds (certpilot:dev) as the node pulls it
// from the cluster's registry, where Up pushes it.
const CertpilotImage = Registry + "/certpilot:dev"

// ImageValues are the chart values that run CertpilotImage.
func ImageValues() map[string]any {
	return map[string]any{"image": map[string]any{"repository": Registry + "/certpilot", "tag": "dev", "pullPolicy": "IfNotPresent"}}
}

// Helm runs bin/helm/helm (hack/build-test-binaries.sh) against the cluster.
func (c *Cluster) Helm(ctx context.Context, args ...string) ([]byte, error) {
	bin, err := testenv.BinDir()
	if err != nil {
		return nil, err
	}
	helm := filepath.Join(bin, "helm", "helm")
	if !exists(helm) {
		return nil, fmt.Errorf("%s is missing: run `make test-binaries`", helm)
	}
	cmd := exec.CommandContext(ctx, helm, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	// Helm's cache, configuration and data stay in the cluster's directory.
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(c.Dir, "helm"),
		"HELM_CONFIG_HOME="+filepath.Join(c.Dir, "helm"), "HELM_DATA_HOME="+filepath.Join(c.Dir, "helm"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("helm %v: %w\n%s", args, err, out)
	}
	return out, nil
}

// HelmInstall runs `helm install --create-namespace --wait` of charts/certpilot as release in
// namespace with values (given as a values file).
func (c *Cluster) HelmInstall(ctx context.Context, release, namespace string, values map[string]any) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	data, err := json.Marshal(values)
	if err != nil {
		return err
	}
	valuesFile := filepath.Join(c.Dir, "values-"+release+".json")
	if err := os.WriteFile(valuesFile, data, 0o644); err != nil {
		return err
	}
	_, err = c.Helm(ctx, "install", release, filepath.Join(root, "charts", "certpilot"),
		"--namespace", namespace, "--create-namespace", "--values", valuesFile,
		"--wait", "--timeout", helmTimeout(ctx))
	return err
}

// HelmUninstall runs `helm uninstall --wait` of release in namespace.
func (c *Cluster) HelmUninstall(ctx context.Context, release, namespace string) error {
	_, err := c.Helm(ctx, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", helmTimeout(ctx))
	return err
}

func helmTimeout(ctx context.Context) string {
	if deadline, ok := ctx.Deadline(); ok {
		return time.Until(deadline).Round(time.Second).String()
	}
	return "3m0s"
}
