package testenv

import (
	"strings"
	"testing"
)

// TestDecodeRBACManifest: the RBAC kinds are decoded typed and strictly (a misspelt field is an
// error, not a rule silently lost); other kinds are refused or skipped.
func TestDecodeRBACManifest(t *testing.T) {
	const role = `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: manager, namespace: system}
`
	if _, err := decodeRBACManifest("role.yaml", []byte(role), false); err == nil || !strings.Contains(err.Error(), `unexpected kind "ServiceAccount"`) {
		t.Errorf("a ServiceAccount among the roles: %v, want it refused", err)
	}
	objects, err := decodeRBACManifest("role.yaml", []byte(role), true)
	if err != nil || len(objects) != 1 || objects[0].GetName() != "reader" {
		t.Fatalf("decoded %v, %v; want the ClusterRole reader alone", objects, err)
	}
	misspelt := strings.Replace(role, "verbs:", "verb:", 1)
	if _, err := decodeRBACManifest("role.yaml", []byte(misspelt), true); err == nil {
		t.Error("a misspelt field was accepted")
	}
}
