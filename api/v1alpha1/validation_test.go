package v1alpha1_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/certpilot/certpilot/internal/testenv"
)

// kube is one apiserver for the package, with the CRDs from config/crd/bases.
var kube *testenv.Kube

func TestMain(m *testing.M) { os.Exit(testenv.RunWithKube(m, &kube)) }

// validCertificate is a Certificate the apiserver accepts; each case below changes one thing.
const validCertificate = `
apiVersion: certpilot.dev/v1alpha1
kind: Certificate
metadata:
  name: www
  namespace: default
spec:
  dnsNames: [www.example.com, example.com]
  secretName: www-tls
  issuerRef:
    name: letsencrypt
    kind: ClusterIssuer
  solver:
    tlsALPN01:
      loadBalancer: {name: edge}
`

const validIssuer = `
apiVersion: certpilot.dev/v1alpha1
kind: Issuer
metadata:
  name: letsencrypt
  namespace: default
spec:
  acme:
    server: https://acme-staging-v02.api.letsencrypt.org/directory
    email: ops@example.com
    privateKeySecretRef: {name: letsencrypt-account}
`

// object parses a manifest and applies edit, a set of dotted paths to values (nil deletes).
func object(t *testing.T, manifest string, edit map[string]any) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatalf("parsing manifest: %v", err)
	}
	for path, value := range edit {
		fields := strings.Split(path, ".")
		if value == nil {
			unstructured.RemoveNestedField(obj.Object, fields...)
			continue
		}
		// Round-trip through YAML so values written as YAML strings become objects and lists.
		var parsed any = value
		if text, ok := value.(string); ok {
			if err := yaml.Unmarshal([]byte(text), &parsed); err != nil {
				t.Fatalf("parsing %s: %v", path, err)
			}
		}
		if err := unstructured.SetNestedField(obj.Object, parsed, fields...); err != nil {
			t.Fatalf("setting %s: %v", path, err)
		}
	}
	return obj
}

// createDryRun asks the real apiserver to admit obj without storing it.
func createDryRun(t *testing.T, obj *unstructured.Unstructured) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return kube.Client.Create(ctx, obj, client.DryRunAll)
}

// checkAdmission fails the test unless err is nil when wantError is empty, or else the
// apiserver's message contains wantError.
func checkAdmission(t *testing.T, err error, wantError string) {
	t.Helper()
	switch {
	case wantError == "" && err != nil:
		t.Fatalf("rejected, want admitted: %v", err)
	case wantError != "" && err == nil:
		t.Fatalf("admitted, want rejected with %q", wantError)
	case wantError != "" && !strings.Contains(err.Error(), wantError):
		t.Fatalf("rejected with\n  %v\nwant a message containing\n  %q", err, wantError)
	}
}

func TestCertificateAdmission(t *testing.T) {
	testenv.SkipIfShort(t)
	hundredAndOne := make([]any, 101)
	for i := range hundredAndOne {
		hundredAndOne[i] = fmt.Sprintf("host%d.example.com", i)
	}
	tests := map[string]struct {
		edit map[string]any
		// wantError is a substring of the apiserver's message; empty means the object is admitted.
		wantError string
	}{
		"valid":                                   {},
		"empty dnsNames":                          {edit: map[string]any{"spec.dnsNames": "[]"}, wantError: "should have at least 1 items"},
		"empty name":                              {edit: map[string]any{"spec.dnsNames": `["", a.example.com]`}, wantError: `spec.dnsNames[0]: Invalid value: "": not a valid DNS name: use lowercase names such as www.example.com or *.example.com (no trailing dot; IP addresses go in spec.ipAddresses)`},
		"underscore":                              {edit: map[string]any{"spec.dnsNames": "[foo_bar.example.com]"}, wantError: `Invalid value: "foo_bar.example.com": not a valid DNS name`},
		"uppercase":                               {edit: map[string]any{"spec.dnsNames": "[WWW.example.com]"}, wantError: `Invalid value: "WWW.example.com": not a valid DNS name`},
		"trailing dot":                            {edit: map[string]any{"spec.dnsNames": "[www.example.com.]"}, wantError: `Invalid value: "www.example.com.": not a valid DNS name`},
		"single label":                            {edit: map[string]any{"spec.dnsNames": "[localhost]"}, wantError: `Invalid value: "localhost": not a valid DNS name`},
		"ip address":                              {edit: map[string]any{"spec.dnsNames": "[10.0.0.1]"}, wantError: `Invalid value: "10.0.0.1": not a valid DNS name`},
		"ipv6 address in dnsNames":                {edit: map[string]any{"spec.dnsNames": "['::1']"}, wantError: `Invalid value: "::1": not a valid DNS name: use lowercase names such as www.example.com or *.example.com (no trailing dot; IP addresses go in spec.ipAddresses)`},
		"wildcard in the middle":                  {edit: map[string]any{"spec.dnsNames": "[www.*.example.com]"}, wantError: `Invalid value: "www.*.example.com": not a valid DNS name`},
		"label over 63":                           {edit: map[string]any{"spec.dnsNames": []any{strings.Repeat("a", 64) + ".example.com"}}, wantError: "not a valid DNS name"},
		"only the bad names listed":               {edit: map[string]any{"spec.dnsNames": "[ok.example.com, Bad.example.com]"}, wantError: `spec.dnsNames[1]: Invalid value: "Bad.example.com": not a valid DNS name`},
		"duplicate names":                         {edit: map[string]any{"spec.dnsNames": "[www.example.com, www.example.com]"}, wantError: `Duplicate value: "www.example.com"`},
		"over 100 names":                          {edit: map[string]any{"spec.dnsNames": hundredAndOne}, wantError: "must have at most 100 items"},
		"wildcard with tls-alpn-01":               {edit: map[string]any{"spec.dnsNames": "['*.example.com']"}, wantError: "wildcard names (*.example.com) can only be validated by the dns01 solver"},
		"wildcard with http-01":                   {edit: map[string]any{"spec.dnsNames": "['*.example.com']", "spec.solver": "{http01: {loadBalancer: {name: edge}}}"}, wantError: "can only be validated by the dns01 solver"},
		"wildcard with dns-01":                    {edit: map[string]any{"spec.dnsNames": "['*.example.com', example.com]", "spec.solver": "{dns01: {manual: {}}}"}},
		"wildcard with issuer solver":             {edit: map[string]any{"spec.dnsNames": "['*.example.com']", "spec.solver": nil}},
		"wildcard by a named dns01 solver":        {edit: map[string]any{"spec.dnsNames": "['*.example.com', example.com]", "spec.solvers": "[{dnsNames: ['*.example.com'], dns01: {manual: {}}}]"}},
		"wildcard by a named http01 solver":       {edit: map[string]any{"spec.dnsNames": "['*.example.com', example.com]", "spec.solvers": "[{dnsNames: ['*.example.com'], http01: {loadBalancer: {name: edge}}}]"}, wantError: "can only be validated by the dns01 solver"},
		"wildcard not named, default tls-alpn-01": {edit: map[string]any{"spec.dnsNames": "['*.example.com', example.com]", "spec.solvers": "[{dnsNames: [example.com], dns01: {manual: {}}}]"}, wantError: "can only be validated by the dns01 solver"},
		"named solver for an unknown name":        {edit: map[string]any{"spec.solvers": "[{dnsNames: [other.example.com], dns01: {manual: {}}}]"}, wantError: "every name in spec.solvers[].dnsNames must be one of spec.dnsNames"},
		"named solver with two types":             {edit: map[string]any{"spec.solvers": "[{dnsNames: [example.com], dns01: {manual: {}}, http01: {loadBalancer: {name: edge}}}]"}, wantError: "set exactly one solver"},
		"named solver without names":              {edit: map[string]any{"spec.solvers": "[{dnsNames: [], dns01: {manual: {}}}]"}, wantError: "should have at least 1 items"},
		"two solvers":                             {edit: map[string]any{"spec.solver": "{tlsALPN01: {loadBalancer: {name: edge}}, dns01: {manual: {}}}"}, wantError: "set exactly one solver: tlsALPN01, http01 or dns01"},
		"empty solver":                            {edit: map[string]any{"spec.solver": "{}"}, wantError: "set exactly one solver"},
		"two dns01 providers":                     {edit: map[string]any{"spec.solver": "{dns01: {manual: {}, rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigSecretRef: {name: s, key: k}}}}"}, wantError: "set exactly one dns01 provider"},
		"rfc2136":                                 {edit: map[string]any{"spec.solver": "{dns01: {rfc2136: {nameserver: '10.0.0.53:53', tsigKeyName: certpilot., tsigSecretRef: {name: tsig, key: secret}}}}"}},
		"bad tsig algorithm":                      {edit: map[string]any{"spec.solver": "{dns01: {rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigAlgorithm: MD5, tsigSecretRef: {name: s, key: k}}}}"}, wantError: `Unsupported value: "MD5"`},
		"persist":                                 {edit: map[string]any{"spec.solver": "{dns01: {persist: {}}}"}},
		"persist with persistUntil":               {edit: map[string]any{"spec.solver": "{dns01: {persist: {persistUntil: '2027-06-01T00:00:00Z'}, nameservers: ['ns1.example.net:53']}}"}},
		"persist persistUntil not a time":         {edit: map[string]any{"spec.solver": "{dns01: {persist: {persistUntil: 'next year'}}}"}, wantError: "spec.solver.dns01.persist.persistUntil"},
		"persist for a wildcard":                  {edit: map[string]any{"spec.dnsNames": "['*.example.com', example.com]", "spec.solver": "{dns01: {persist: {}}}"}},
		"persist for a named wildcard":            {edit: map[string]any{"spec.dnsNames": "['*.example.com', example.com]", "spec.solvers": "[{dnsNames: ['*.example.com'], dns01: {persist: {}}}]"}},
		"persist and manual":                      {edit: map[string]any{"spec.solver": "{dns01: {persist: {}, manual: {}}}"}, wantError: "set exactly one dns01 provider: manual, rfc2136 or persist"},
		"secretTemplate":                          {edit: map[string]any{"spec.secretTemplate": "{labels: {team: a}, annotations: {backup.example.com/schedule: daily}}"}},
		"secretTemplate with certpilot's label":   {edit: map[string]any{"spec.secretTemplate": "{labels: {app.kubernetes.io/managed-by: me}}"}, wantError: "secretTemplate.labels cannot set certpilot's own labels"},
		"secretTemplate with a certpilot.dev key": {edit: map[string]any{"spec.secretTemplate": "{annotations: {certpilot.dev/order: x}}"}, wantError: "secretTemplate.annotations cannot set certpilot's own annotations"},
		"secretTemplate label value too long":     {edit: map[string]any{"spec.secretTemplate": "{labels: {team: " + strings.Repeat("a", 64) + "}}"}, wantError: "a label value at most 63"},
		"persist and rfc2136":                     {edit: map[string]any{"spec.solver": "{dns01: {persist: {}, rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigSecretRef: {name: s, key: k}}}}"}, wantError: "set exactly one dns01 provider"},
		"no dns01 provider":                       {edit: map[string]any{"spec.solver": "{dns01: {nameservers: ['ns:53']}}"}, wantError: "set exactly one dns01 provider"},
		"tsig hmac-sha256 as BIND writes it":      {edit: map[string]any{"spec.solver": "{dns01: {rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigAlgorithm: hmac-sha256, tsigSecretRef: {name: s, key: k}}}}"}},
		"tsig hmac-sha512":                        {edit: map[string]any{"spec.solver": "{dns01: {rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigAlgorithm: hmac-sha512, tsigSecretRef: {name: s, key: k}}}}"}},
		"tsig HMACSHA1":                           {edit: map[string]any{"spec.solver": "{dns01: {rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigAlgorithm: HMACSHA1, tsigSecretRef: {name: s, key: k}}}}"}},
		"tsig hmac-md5":                           {edit: map[string]any{"spec.solver": "{dns01: {rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigAlgorithm: hmac-md5, tsigSecretRef: {name: s, key: k}}}}"}, wantError: `Unsupported value: "hmac-md5"`},
		"cname follow with rfc2136":               {edit: map[string]any{"spec.solver": "{dns01: {cnameStrategy: Follow, rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigSecretRef: {name: s, key: k}}}}"}},
		"cname follow with manual":                {edit: map[string]any{"spec.solver": "{dns01: {cnameStrategy: Follow, manual: {}}}"}, wantError: "cnameStrategy Follow applies to rfc2136 only"},
		"cname other strategy":                    {edit: map[string]any{"spec.solver": "{dns01: {cnameStrategy: Always, rfc2136: {nameserver: 'ns:53', tsigKeyName: k, tsigSecretRef: {name: s, key: k}}}}"}, wantError: `Unsupported value: "Always"`},
		"probe address":                           {edit: map[string]any{"spec.solver.tlsALPN01.probeAddress": "127.0.0.1:8443"}},
		"probe address without port":              {edit: map[string]any{"spec.solver.tlsALPN01.probeAddress": "edge.example.com"}, wantError: "spec.solver.tlsALPN01.probeAddress"},
		"renewBefore 720h":                        {edit: map[string]any{"spec.renewBefore": "720h"}},
		"renewBefore 4m":                          {edit: map[string]any{"spec.renewBefore": "4m"}, wantError: "renewBefore must be at least 5m"},
		"renewBefore not a duration":              {edit: map[string]any{"spec.renewBefore": "a week"}, wantError: "spec.renewBefore"},
		"RSA 4096":                                {edit: map[string]any{"spec.privateKey": "{algorithm: RSA, size: 4096}"}},
		"RSA without size":                        {edit: map[string]any{"spec.privateKey": "{algorithm: RSA}"}},
		"RSA 1024":                                {edit: map[string]any{"spec.privateKey": "{algorithm: RSA, size: 1024}"}, wantError: "RSA keys must be 2048, 3072 or 4096 bits"},
		"ECDSA 384":                               {edit: map[string]any{"spec.privateKey": "{algorithm: ECDSA, size: 384}"}},
		"ECDSA 521":                               {edit: map[string]any{"spec.privateKey": "{algorithm: ECDSA, size: 521}"}, wantError: "ECDSA keys must be 256 (P-256) or 384 (P-384) bits"},
		"ECDSA 2048":                              {edit: map[string]any{"spec.privateKey": "{size: 2048}"}, wantError: "ECDSA keys must be 256"},
		"Ed25519":                                 {edit: map[string]any{"spec.privateKey": "{algorithm: Ed25519}"}, wantError: `Unsupported value: "Ed25519"`},
		"issuer kind Issuer":                      {edit: map[string]any{"spec.issuerRef.kind": "Issuer"}},
		"issuer kind default":                     {edit: map[string]any{"spec.issuerRef.kind": nil}},
		"issuer kind other":                       {edit: map[string]any{"spec.issuerRef.kind": "CertificateAuthority"}, wantError: `spec.issuerRef.kind: Unsupported value: "CertificateAuthority": supported values: "Issuer", "ClusterIssuer"`},
		"no issuer name":                          {edit: map[string]any{"spec.issuerRef.name": nil}, wantError: "spec.issuerRef.name: Required value"},
		"no secretName":                           {edit: map[string]any{"spec.secretName": nil}, wantError: "spec.secretName: Required value"},
		"bad secretName":                          {edit: map[string]any{"spec.secretName": "WWW_TLS"}, wantError: "spec.secretName"},
		"inject env":                              {edit: map[string]any{"spec.inject": "[{kind: Deployment, name: web, env: SSL_CERTS}]"}},
		"inject mountPath":                        {edit: map[string]any{"spec.inject": "[{kind: StatefulSet, name: db, container: db, mountPath: /etc/tls}]"}},
		"inject env and mountPath":                {edit: map[string]any{"spec.inject": "[{kind: Deployment, name: web, env: SSL_CERTS, mountPath: /etc/tls}]"}, wantError: "set exactly one of env or mountPath"},
		"inject neither":                          {edit: map[string]any{"spec.inject": "[{kind: Deployment, name: web}]"}, wantError: "set exactly one of env or mountPath"},
		"inject bad env name":                     {edit: map[string]any{"spec.inject": "[{kind: Deployment, name: web, env: 1-CERT}]"}, wantError: "spec.inject[0].env"},
		"inject relative mountPath":               {edit: map[string]any{"spec.inject": "[{kind: Deployment, name: web, mountPath: etc/tls}]"}, wantError: "spec.inject[0].mountPath"},
		"ipv4 address":                            {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1']"}},
		"ipv6 address":                            {edit: map[string]any{"spec.ipAddresses": "['2001:db8::1', '::1']"}},
		"only ip addresses":                       {edit: map[string]any{"spec.dnsNames": nil, "spec.ipAddresses": "['127.0.0.1', '::1']"}},
		"only ip addresses by http01":             {edit: map[string]any{"spec.dnsNames": nil, "spec.ipAddresses": "['127.0.0.1']", "spec.solver": "{http01: {loadBalancer: {name: edge}}}"}},
		"neither names nor addresses":             {edit: map[string]any{"spec.dnsNames": nil}, wantError: "set at least one of dnsNames or ipAddresses"},
		"empty ipAddresses":                       {edit: map[string]any{"spec.ipAddresses": "[]"}, wantError: "spec.ipAddresses: Invalid value: 0: spec.ipAddresses in body should have at least 1 items"},
		"ip address not an address":               {edit: map[string]any{"spec.ipAddresses": "[www.example.com]"}, wantError: `spec.ipAddresses[0]: Invalid value: "www.example.com": not an IP address in canonical form`},
		"ipv4 with leading zeros":                 {edit: map[string]any{"spec.ipAddresses": "['192.0.2.01']"}, wantError: "not an IP address in canonical form"},
		"ipv6 not canonical":                      {edit: map[string]any{"spec.ipAddresses": "['2001:DB8:0:0::1']"}, wantError: `Invalid value: "2001:DB8:0:0::1": not an IP address in canonical form`},
		"ipv6 in brackets":                        {edit: map[string]any{"spec.ipAddresses": "['[::1]']"}, wantError: "not an IP address in canonical form"},
		"ipv6 with a zone":                        {edit: map[string]any{"spec.ipAddresses": "['fe80::1%eth0']"}, wantError: "not an IP address in canonical form"},
		"ipv4-mapped ipv6":                        {edit: map[string]any{"spec.ipAddresses": "['::ffff:192.0.2.1']"}, wantError: "not an IP address in canonical form"},
		"ip address with a prefix":                {edit: map[string]any{"spec.ipAddresses": "['192.0.2.0/24']"}, wantError: "not an IP address in canonical form"},
		"duplicate ip addresses":                  {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1', '192.0.2.1']"}, wantError: `Duplicate value: "192.0.2.1"`},
		"over 100 names and addresses":            {edit: map[string]any{"spec.dnsNames": hundredAndOne[:99], "spec.ipAddresses": "['192.0.2.1', '192.0.2.2']"}, wantError: "a certificate has at most 100 names: dnsNames and ipAddresses together"},
		"100 names and addresses":                 {edit: map[string]any{"spec.dnsNames": hundredAndOne[:98], "spec.ipAddresses": "['192.0.2.1', '192.0.2.2']"}},
		"ip address with dns01":                   {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1']", "spec.solver": "{dns01: {manual: {}}}"}, wantError: "IP addresses can only be validated by the http01 or tlsALPN01 solver, not by dns01"},
		"ip address with dns-persist-01":          {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1']", "spec.solver": "{dns01: {persist: {}}}"}, wantError: "IP addresses can only be validated by the http01 or tlsALPN01 solver"},
		"ip address with issuer solver":           {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1']", "spec.solver": nil}},
		"ip address by a named http01 solver":     {edit: map[string]any{"spec.dnsNames": "['*.example.com']", "spec.ipAddresses": "['192.0.2.1']", "spec.solver": "{dns01: {manual: {}}}", "spec.solvers": "[{ipAddresses: ['192.0.2.1'], http01: {loadBalancer: {name: edge}}}]"}},
		"ip address by a named dns01 solver":      {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1']", "spec.solvers": "[{ipAddresses: ['192.0.2.1'], dns01: {manual: {}}}]"}, wantError: "IP addresses can only be validated by the http01 or tlsALPN01 solver"},
		"ip address not named, default dns01":     {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1']", "spec.solver": "{dns01: {manual: {}}}", "spec.solvers": "[{dnsNames: [example.com], http01: {loadBalancer: {name: edge}}}]"}, wantError: "IP addresses can only be validated by the http01 or tlsALPN01 solver"},
		"named solver for an unknown address":     {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1']", "spec.solvers": "[{ipAddresses: ['192.0.2.2'], http01: {loadBalancer: {name: edge}}}]"}, wantError: "every address in spec.solvers[].ipAddresses must be one of spec.ipAddresses"},
		"named solver for an address, no list":    {edit: map[string]any{"spec.solvers": "[{ipAddresses: ['192.0.2.2'], http01: {loadBalancer: {name: edge}}}]"}, wantError: "every address in spec.solvers[].ipAddresses must be one of spec.ipAddresses"},
		"named solver with neither list":          {edit: map[string]any{"spec.solvers": "[{http01: {loadBalancer: {name: edge}}}]"}, wantError: "a named solver lists at least one of dnsNames or ipAddresses"},
		"named solver names an address as a name": {edit: map[string]any{"spec.ipAddresses": "['192.0.2.1']", "spec.solvers": "[{dnsNames: ['192.0.2.1'], http01: {loadBalancer: {name: edge}}}]"}, wantError: "every name in spec.solvers[].dnsNames must be one of spec.dnsNames"},
		"inject other kind":                       {edit: map[string]any{"spec.inject": "[{kind: Pod, name: web, env: X}]"}, wantError: `Unsupported value: "Pod"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkAdmission(t, createDryRun(t, object(t, validCertificate, tc.edit)), tc.wantError)
		})
	}
}

func TestCertificateDefaults(t *testing.T) {
	testenv.SkipIfShort(t)
	obj := object(t, validCertificate, map[string]any{"spec.issuerRef.kind": nil})
	if err := createDryRun(t, obj); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]any{
		"spec.renewBefore":          "168h",
		"spec.issuerRef.kind":       "Issuer",
		"spec.privateKey.algorithm": "ECDSA",
		"spec.privateKey.size":      int64(256),
	} {
		got, _, _ := unstructured.NestedFieldNoCopy(obj.Object, strings.Split(path, ".")...)
		if got != want {
			t.Errorf("%s = %v (%T), want default %v", path, got, got, want)
		}
	}
}

func TestIssuerAdmission(t *testing.T) {
	testenv.SkipIfShort(t)
	tests := map[string]struct {
		kind      string
		edit      map[string]any
		wantError string
	}{
		"valid":                  {},
		"valid cluster issuer":   {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil}},
		"plain http server":      {edit: map[string]any{"spec.acme.server": "http://acme.example.com/directory"}, wantError: "server must be an https:// ACME directory URL"},
		"not a url":              {edit: map[string]any{"spec.acme.server": "https://"}, wantError: "server must be an https:// ACME directory URL"},
		"no account key secret":  {edit: map[string]any{"spec.acme.privateKeySecretRef": nil}, wantError: "spec.acme.privateKeySecretRef: Required value"},
		"bad email":              {edit: map[string]any{"spec.acme.email": "ops"}, wantError: "spec.acme.email"},
		"eab":                    {edit: map[string]any{"spec.acme.externalAccountBinding": "{keyID: kid-1, keySecretRef: {name: eab, key: hmac}}"}},
		"eab without key secret": {edit: map[string]any{"spec.acme.externalAccountBinding": "{keyID: kid-1}"}, wantError: "keySecretRef: Required value"},
		"profile":                {edit: map[string]any{"spec.acme.profile": "tlsserver"}},
		"default solver":         {edit: map[string]any{"spec.solver": "{http01: {loadBalancer: {name: edge, namespace: ingress}}}"}},
		"two default solvers":    {edit: map[string]any{"spec.solver": "{http01: {loadBalancer: {name: edge}}, dns01: {manual: {}}}"}, wantError: "set exactly one solver"},

		"caBundle of 64 KiB":   {edit: map[string]any{"spec.acme.caBundle": base64Of(64 << 10)}},
		"caBundle over 64 KiB": {edit: map[string]any{"spec.acme.caBundle": base64Of(64<<10 + 1)}, wantError: "caBundle holds at most 64 KiB of PEM certificates"},
		"caBundle of 1.5 MiB":  {edit: map[string]any{"spec.acme.caBundle": base64Of(3 << 19)}, wantError: "spec.acme.caBundle"},
		"policy on an Issuer":  {edit: map[string]any{"spec.policy": "{dnsZones: [example.com]}"}, wantError: "spec.policy is for ClusterIssuers: an Issuer serves only its own namespace"},
		"cluster issuer policy": {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil,
			"spec.policy": "{namespaceSelector: {matchLabels: {tenant: a}}, dnsZones: [example.com, team-a.example.net], namespaceDNSZones: Require}"}},
		"policy zone with a wildcard": {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil, "spec.policy": "{dnsZones: ['*.example.com']}"},
			wantError: "a DNS zone is a lowercase DNS name such as example.com (no wildcard, no trailing dot)"},
		"policy zone with a trailing dot": {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil, "spec.policy": "{dnsZones: [example.com.]}"},
			wantError: "a DNS zone is a lowercase DNS name"},
		"policy over 64 zones": {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil, "spec.policy": map[string]any{"dnsZones": zones(65)}},
			wantError: "must have at most 64 items"},
		"policy namespaceDNSZones other": {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil, "spec.policy": "{namespaceDNSZones: Sometimes}"},
			wantError: `Unsupported value: "Sometimes"`},
		"policy selector over 16 labels": {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil, "spec.policy": map[string]any{"namespaceSelector": map[string]any{"matchLabels": labelsOf(17)}}},
			wantError: "policy.namespaceSelector.matchLabels has at most 16 labels"},
		"policy selector over 16 expressions": {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil, "spec.policy": map[string]any{"namespaceSelector": map[string]any{"matchExpressions": expressions(17)}}},
			wantError: "policy.namespaceSelector.matchExpressions has at most 16 requirements"},
		"policy selector Exists": {kind: "ClusterIssuer", edit: map[string]any{"metadata.namespace": nil, "spec.policy": "{namespaceSelector: {matchExpressions: [{key: tenant, operator: Exists}]}}"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			obj := object(t, validIssuer, tc.edit)
			if tc.kind != "" {
				obj.SetKind(tc.kind)
			}
			checkAdmission(t, createDryRun(t, obj), tc.wantError)
		})
	}
}

// base64Of returns the base64 of n bytes, as a caBundle of that size is written in YAML.
func base64Of(n int) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", n)))
}

// zones returns n distinct DNS zones.
func zones(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = fmt.Sprintf("zone%d.example.com", i)
	}
	return out
}

// labelsOf returns n distinct labels.
func labelsOf(n int) map[string]any {
	out := map[string]any{}
	for i := range n {
		out[fmt.Sprintf("label%d", i)] = "x"
	}
	return out
}

// expressions returns n label selector requirements.
func expressions(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"key": fmt.Sprintf("label%d", i), "operator": "Exists"}
	}
	return out
}
