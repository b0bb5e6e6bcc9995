package install

import (
	"context"
	"fmt"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/certpilot/certpilot/internal/testenv"
)

// serviceMonitorCRD is the part of the Prometheus Operator's ServiceMonitor CRD
// (monitoring.coreos.com/v1) that the chart uses, with the operator's field names and types. The
// schema is closed (no preserve-unknown-fields), so a server-side apply of a field the chart
// misspells fails instead of being pruned.
const serviceMonitorCRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor, shortNames: [smon]}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              required: [selector]
              properties:
                jobLabel: {type: string}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      targetPort: {x-kubernetes-int-or-string: true}
                      path: {type: string}
                      scheme: {type: string, enum: [http, https]}
                      bearerTokenFile: {type: string}
                      tlsConfig:
                        type: object
                        properties:
                          insecureSkipVerify: {type: boolean}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                selector:
                  type: object
                  x-kubernetes-map-type: atomic
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                    matchExpressions:
                      type: array
                      items:
                        type: object
                        required: [key, operator]
                        properties:
                          key: {type: string}
                          operator: {type: string}
                          values: {type: array, items: {type: string}}
`

// installServiceMonitorCRD installs the ServiceMonitor CRD (for real: its objects can only be
// dry-run once it is served) and waits until it is established.
func installServiceMonitorCRD(t *testing.T) {
	t.Helper()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict([]byte(serviceMonitorCRD), &crd); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Create(ctx, &crd); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	err := testenv.Poll(ctx, 30*time.Second, func() error {
		var current apiextensionsv1.CustomResourceDefinition
		if err := kube.Client.Get(ctx, types.NamespacedName{Name: crd.Name}, &current); err != nil {
			return err
		}
		for _, condition := range current.Status.Conditions {
			if condition.Type == apiextensionsv1.Established && condition.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("CRD %s is not established yet", crd.Name)
	})
	if err != nil {
		t.Fatal(err)
	}
}
