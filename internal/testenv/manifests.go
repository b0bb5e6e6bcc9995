package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// DecodeManifests splits a multi-document YAML stream (named source in errors) into objects,
// skipping empty documents. Numbers become int64, as in objects read from the API.
func DecodeManifests(source string, manifest []byte) ([]*unstructured.Unstructured, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	var objects []*unstructured.Unstructured
	for {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		data, err := yaml.YAMLToJSON(document)
		if err != nil {
			return nil, fmt.Errorf("%s: not YAML: %w\n%s", source, err, document)
		}
		if string(data) == "null" || string(data) == "{}" {
			continue
		}
		object := &unstructured.Unstructured{}
		if err := object.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("%s: not a Kubernetes object: %w\n%s", source, err, document)
		}
		objects = append(objects, object)
	}
}

// RenderChart renders charts/certpilot for release as `helm template` / `helm install` does
// (values checked against values.schema.json) and returns each template's output by name.
func RenderChart(release ChartRelease) (map[string]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	chrt, err := loader.Load(filepath.Join(root, "charts", "certpilot"))
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	values, err := chartutil.ToRenderValues(chrt, release.Values, chartutil.ReleaseOptions{
		Name: release.Name, Namespace: release.Namespace, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("the chart's values: %w", err)
	}
	rendered, err := engine.Render(chrt, values)
	if err != nil {
		return nil, fmt.Errorf("rendering the chart: %w", err)
	}
	return rendered, nil
}
