package edge

import (
	"crypto/tls"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

func TestJudgeSecret(t *testing.T) {
	issued := edgetest.SelfSignedCertificate(t, "www.a.test", "a.test")
	other := edgetest.SelfSignedCertificate(t, "www.a.test")
	wildcard := edgetest.SelfSignedCertificate(t, "*.a.test")
	mixed := edgetest.SelfSignedCertificate(t, "www.a.test", "admin.b.test")
	elsewhere := edgetest.SelfSignedCertificate(t, "a.test", "b.test")
	serialOf := func(c *tls.Certificate) string { return fmt.Sprintf("%x", c.Leaf.SerialNumber) }
	certificate := func(uid types.UID, serial string, dnsNames ...string) *v1alpha1.Certificate {
		return &v1alpha1.Certificate{
			ObjectMeta: metav1.ObjectMeta{UID: uid},
			Spec:       v1alpha1.CertificateSpec{DNSNames: dnsNames},
			Status:     v1alpha1.CertificateStatus{SerialNumber: serial},
		}
	}
	controller := true
	ownedBy := func(name string, uid types.UID) *metav1.OwnerReference {
		return &metav1.OwnerReference{APIVersion: "certpilot.dev/v1alpha1", Kind: "Certificate", Name: name, UID: uid, Controller: &controller}
	}
	issuers := map[string]issuer{
		"a/www":      newIssuer(certificate("uid-www", serialOf(issued), "www.a.test", "a.test")),
		"a/upper":    newIssuer(certificate("uid-upper", "00"+fmt.Sprintf("%X", issued.Leaf.SerialNumber), "www.a.test")),
		"a/wildcard": newIssuer(certificate("uid-wildcard", serialOf(wildcard), "*.a.test")),
		"a/covers":   newIssuer(certificate("uid-covers", serialOf(other), "*.a.test")),
		"a/mixed":    newIssuer(certificate("uid-mixed", serialOf(mixed), "www.a.test")),
		"a/pending":  newIssuer(certificate("uid-pending", "", "www.a.test")),
	}
	for name, tc := range map[string]struct {
		namespace   string
		owner       *metav1.OwnerReference
		certificate *tls.Certificate
		skipSerial  bool
		hosts       *HostNamespaces
		names       []string
		reason      string
	}{
		"issued":                  {owner: ownedBy("www", "uid-www"), certificate: issued, names: []string{"www.a.test", "a.test"}},
		"serial case and zeros":   {owner: ownedBy("upper", "uid-upper"), certificate: issued, names: []string{"www.a.test"}},
		"no owner":                {certificate: issued, reason: refusedNotControlled},
		"owner not a Certificate": {owner: &metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "www", UID: "uid-www"}, certificate: issued, reason: refusedNotControlled},
		"owner of another group":  {owner: &metav1.OwnerReference{APIVersion: "cert-manager.io/v1", Kind: "Certificate", Name: "www", UID: "uid-www"}, certificate: issued, reason: refusedNotControlled},
		"owner's UID differs":     {owner: ownedBy("www", "uid-recreated"), certificate: issued, reason: refusedOwnerNotFound},
		"owner missing":           {owner: ownedBy("gone", "uid-gone"), certificate: issued, reason: refusedOwnerNotFound},
		"owner in another namespace": {namespace: "b", owner: ownedBy("www", "uid-www"), certificate: issued,
			reason: refusedOwnerNotFound},
		"serial not issued":        {owner: ownedBy("www", "uid-www"), certificate: other, reason: refusedSerialNotIssued},
		"serial not recorded yet":  {owner: ownedBy("pending", "uid-pending"), certificate: issued, reason: refusedSerialNotIssued},
		"previous, serial skipped": {owner: ownedBy("www", "uid-www"), certificate: other, skipSerial: true, names: []string{"www.a.test"}},
		"name not covered":         {owner: ownedBy("wildcard", "uid-wildcard"), certificate: elsewhere, reason: refusedNameNotCovered},
		"wildcard leaf":            {owner: ownedBy("wildcard", "uid-wildcard"), certificate: wildcard, names: []string{"*.a.test"}},
		"covered by a wildcard":    {owner: ownedBy("covers", "uid-covers"), certificate: other, names: []string{"www.a.test"}},
		"only covered names":       {owner: ownedBy("mixed", "uid-mixed"), certificate: mixed, names: []string{"www.a.test"}},
		"invalid":                  {owner: ownedBy("www", "uid-www"), reason: refusedInvalid},
		"host map allows":          {owner: ownedBy("www", "uid-www"), certificate: issued, hosts: mustHosts(t, "*.a.test=a", "a.test=a"), names: []string{"www.a.test", "a.test"}},
		"host map allows some":     {owner: ownedBy("www", "uid-www"), certificate: issued, hosts: mustHosts(t, "*.a.test=a"), names: []string{"www.a.test"}},
		"host map, other namespace": {owner: ownedBy("www", "uid-www"), certificate: issued, hosts: mustHosts(t, "*.a.test=b", "a.test=b"),
			reason: refusedNamespaceNotAllowed},
	} {
		t.Run(name, func(t *testing.T) {
			namespace := tc.namespace
			if namespace == "" {
				namespace = "a"
			}
			names, reason := judgeSecret(namespace, tc.owner, tc.certificate, issuers, tc.hosts, !tc.skipSerial)
			if reason != tc.reason || !slices.Equal(names, tc.names) {
				t.Errorf("judgeSecret = %v, %q; want %v, %q", names, reason, tc.names, tc.reason)
			}
		})
	}
}

func mustHosts(t *testing.T, entries ...string) *HostNamespaces {
	t.Helper()
	hosts, err := ParseHostNamespaces(entries)
	if err != nil {
		t.Fatal(err)
	}
	return hosts
}

func TestHostNamespaces(t *testing.T) {
	hosts := mustHosts(t, "*.team-a.test=team-a", "shop.test=team-a", "shop.test=team-b", " WWW.Example.COM. = web ")
	for name, want := range map[[2]string]bool{
		{"a.team-a.test", "team-a"}:    true,
		{"b.a.team-a.test", "team-a"}:  true,
		{"*.team-a.test", "team-a"}:    true,
		{"team-a.test", "team-a"}:      false,
		{"a.team-a.test", "team-b"}:    false,
		{"shop.test", "team-a"}:        true,
		{"shop.test", "team-b"}:        true,
		{"shop.test", "team-c"}:        false,
		{"a.shop.test", "team-a"}:      false,
		{"www.example.com", "web"}:     true,
		{"xteam-a.test", "team-a"}:     false,
		{"unlisted.example", "team-a"}: false,
	} {
		if got := hosts.Allows(name[0], name[1]); got != want {
			t.Errorf("Allows(%q, %q) = %t, want %t", name[0], name[1], got, want)
		}
	}
	for _, bad := range []string{"shop.test", "=team-a", "shop.test=", "*.=team-a", "a.*.test=team-a"} {
		if _, err := ParseHostNamespaces([]string{bad}); err == nil {
			t.Errorf("ParseHostNamespaces(%q) accepted it", bad)
		}
	}
}

func TestIsClaimSecret(t *testing.T) {
	for name, tc := range map[string]struct {
		secretName          string
		labels, annotations map[string]string
		claim               bool
	}{
		"certificate Secret": {secretName: "www-tls"},
		"claim label":        {secretName: "www-tls-x", labels: map[string]string{v1alpha1.LabelClaim: "true"}, claim: true},
		"claim annotation":   {secretName: "other", annotations: map[string]string{annotationClaimOf: "www-tls"}, claim: true},
		"claim name":         {secretName: "www-tls" + v1alpha1.ClaimSecretSuffix, claim: true},
		"next-key name":      {secretName: "www" + v1alpha1.NextKeySecretSuffix, claim: true},
	} {
		t.Run(name, func(t *testing.T) {
			if got := isClaimSecret(tc.secretName, tc.labels, tc.annotations); got != tc.claim {
				t.Errorf("isClaimSecret = %t, want %t", got, tc.claim)
			}
		})
	}
}

// TestServedNames: a certificate is indexed only for the names it is served for.
func TestServedNames(t *testing.T) {
	both := edgetest.SelfSignedCertificate(t, "a.test", "b.test")
	index := newCertificateIndex([]ServedCertificate{{Certificate: both, Names: []string{"a.test"}}}, nil, time.Now())
	if index.lookup("a.test") != both || index.lookup("b.test") != nil {
		t.Errorf("served for %v, want only a.test", slices.Sorted(maps.Keys(index.byName)))
	}
}
