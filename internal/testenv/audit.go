package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// auditPolicy logs every request once, when it completes (or, for a watch, when its response
// starts), with its metadata only: who, which verb, which resource. No bodies.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// configureAudit makes env's apiserver write an audit log to path, with a policy written next
// to it.
func configureAudit(env *envtest.Environment, path string) error {
	policy := filepath.Join(filepath.Dir(path), "audit-policy.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return err
	}
	env.ControlPlane.GetAPIServer().Configure().
		Set("audit-policy-file", policy).
		Set("audit-log-path", path).
		// Blocking (the default for the log backend): an event is in the file when its request
		// has been answered, so a reader that waited for a result sees every request before it.
		Set("audit-log-mode", "blocking")
	return nil
}

// AuditEvent is one request from the apiserver's audit log, reduced to what counting needs.
type AuditEvent struct {
	AuditID string
	// Stage is ResponseStarted (a watch's first line) or ResponseComplete.
	Stage     string
	Verb      string
	User      string
	UserAgent string
	// Resource and Subresource ("certificates", "status"); empty for non-resource URLs.
	Resource, Subresource, Namespace string
	// Name is the object's name; empty for lists, watches and most creates of generated names.
	Name     string
	Code     int
	Received time.Time
	// Completed is when the apiserver answered (stageTimestamp of the line kept: for a watch,
	// when its response started).
	Completed time.Time
}

// Client is the user agent's product, the part before the first "/": a binary's default user
// agent starts with its file name, so "manager", "edge" or the test binary ("bench.test").
func (e AuditEvent) Client() string {
	client, _, _ := strings.Cut(e.UserAgent, "/")
	if client == "" {
		return "(none)"
	}
	return client
}

// IsWrite reports whether the request changes state: create, update, patch, delete or
// deletecollection.
func (e AuditEvent) IsWrite() bool {
	switch e.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// ResourcePath is resource[/subresource], or "(non-resource)".
func (e AuditEvent) ResourcePath() string {
	switch {
	case e.Resource == "":
		return "(non-resource)"
	case e.Subresource != "":
		return e.Resource + "/" + e.Subresource
	}
	return e.Resource
}

// ReadAuditLog reads an audit log written by an apiserver started with
// KubeOptions.AuditLogPath and returns one event per request (a watch's two lines count once),
// in the order they were written.
func ReadAuditLog(path string) ([]AuditEvent, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var events []AuditEvent
	seen := map[string]bool{}
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for line := 1; scanner.Scan(); line++ {
		var raw struct {
			AuditID string `json:"auditID"`
			Stage   string `json:"stage"`
			Verb    string `json:"verb"`
			User    struct {
				Username string `json:"username"`
			} `json:"user"`
			UserAgent string `json:"userAgent"`
			ObjectRef *struct {
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
				Namespace   string `json:"namespace"`
				Name        string `json:"name"`
			} `json:"objectRef"`
			ResponseStatus *struct {
				Code int `json:"code"`
			} `json:"responseStatus"`
			RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
			StageTimestamp           time.Time `json:"stageTimestamp"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &raw); err != nil {
			// The apiserver may be writing the last line while we read.
			if !strings.HasSuffix(scanner.Text(), "}") {
				continue
			}
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if seen[raw.AuditID] {
			continue
		}
		seen[raw.AuditID] = true
		event := AuditEvent{
			AuditID: raw.AuditID, Stage: raw.Stage, Verb: raw.Verb, User: raw.User.Username,
			UserAgent: raw.UserAgent, Received: raw.RequestReceivedTimestamp, Completed: raw.StageTimestamp,
		}
		if raw.ObjectRef != nil {
			event.Resource, event.Subresource, event.Namespace = raw.ObjectRef.Resource, raw.ObjectRef.Subresource, raw.ObjectRef.Namespace
			event.Name = raw.ObjectRef.Name
		}
		if raw.ResponseStatus != nil {
			event.Code = raw.ResponseStatus.Code
		}
		events = append(events, event)
	}
	return events, scanner.Err()
}
