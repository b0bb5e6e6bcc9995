package v1alpha1_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// TestCertificatePrintColumns asks the apiserver for a Table, as `kubectl get certificates` does,
// and checks the columns operators read: what is served, until when, and whether it renews.
func TestCertificatePrintColumns(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cert := &certpilotv1alpha1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "columns", Namespace: "default"},
		Spec: certpilotv1alpha1.CertificateSpec{
			DNSNames:   []string{"www.example.com", "example.com"},
			SecretName: "www-tls",
			IssuerRef:  certpilotv1alpha1.IssuerReference{Name: "letsencrypt"},
		},
	}
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Client.Delete(context.Background(), cert) })
	notAfter := metav1.NewTime(time.Date(2027, 2, 10, 12, 0, 0, 0, time.UTC))
	cert.Status = certpilotv1alpha1.CertificateStatus{
		NotAfter:      &notAfter,
		AutoRenewable: ptr.To(true),
		Conditions: []metav1.Condition{{
			Type: certpilotv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Issued",
			Message: "Certificate is up to date", LastTransitionTime: metav1.Now(),
		}},
	}
	if err := kube.Client.Status().Update(ctx, cert); err != nil {
		t.Fatal(err)
	}

	table := getTable(ctx, t, "/apis/certpilot.dev/v1alpha1/namespaces/default/certificates/columns")
	var names []string
	for _, column := range table.ColumnDefinitions {
		if column.Priority == 0 {
			names = append(names, column.Name)
		}
	}
	wantNames := []string{"Name", "Subject", "Ready", "Expires", "Auto-Renew", "Secret", "Age"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("default columns = %v, want %v", names, wantNames)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("got %d rows, want 1", len(table.Rows))
	}
	cells := map[string]any{}
	for i, column := range table.ColumnDefinitions {
		cells[column.Name] = table.Rows[0].Cells[i]
	}
	want := map[string]any{
		"Name": "columns", "Subject": "www.example.com", "Ready": "True",
		"Expires": "2027-02-10T12:00:00Z", "Auto-Renew": true, "Secret": "www-tls",
		"Issuer": "letsencrypt", "Status": "Certificate is up to date",
	}
	for name, value := range want {
		if cells[name] != value {
			t.Errorf("column %s = %#v, want %#v", name, cells[name], value)
		}
	}
}

func TestShortNamesAndCategory(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var list metav1.APIResourceList
	body, err := restClient(t).Get().AbsPath("/apis/certpilot.dev/v1alpha1").Do(ctx).Raw()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	for _, resource := range list.APIResources {
		if strings.Contains(resource.Name, "/") {
			continue // subresources such as certificates/status
		}
		for _, short := range resource.ShortNames {
			// cert-manager owns cert and certs; a clash would make `kubectl get cert` ambiguous.
			if short == "cert" || short == "certs" {
				t.Errorf("%s uses cert-manager's short name %q", resource.Name, short)
			}
		}
		if !slices.Equal(resource.Categories, []string{"certpilot"}) {
			t.Errorf("%s categories = %v, want [certpilot]", resource.Name, resource.Categories)
		}
		if resource.Name == "certificates" && !slices.Equal(resource.ShortNames, []string{"cpcert", "cpcerts"}) {
			t.Errorf("certificates short names = %v", resource.ShortNames)
		}
	}
}

func restClient(t *testing.T) *rest.RESTClient {
	t.Helper()
	cfg := rest.CopyConfig(kube.Config)
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(kube.Scheme).WithoutConversion()
	client, err := rest.UnversionedRESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func getTable(ctx context.Context, t *testing.T, path string) *metav1.Table {
	t.Helper()
	body, err := restClient(t).Get().AbsPath(path).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(ctx).Raw()
	if err != nil {
		t.Fatal(err)
	}
	table := &metav1.Table{}
	if err := json.Unmarshal(body, table); err != nil {
		t.Fatalf("decoding Table: %v", err)
	}
	return table
}
