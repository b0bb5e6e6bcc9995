package kube

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

func TestSecretCacheTransform(t *testing.T) {
	key, chain, ca := []byte("-----KEY-----\n"), []byte("-----LEAF-----\n-----INTERMEDIATE-----\n"), []byte("-----ROOT-----\n")
	concat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := map[string]struct {
		secretType corev1.SecretType
		data       map[string][]byte
		wantShared bool
	}{
		"bundle is key then chain": {
			secretType: corev1.SecretTypeTLS,
			data:       map[string][]byte{"tls.key": key, "tls.crt": chain, "ca.crt": ca, certpilotv1alpha1.BundleKey: concat(key, chain)},
			wantShared: true,
		},
		"key without a final newline": {
			secretType: corev1.SecretTypeTLS,
			data: map[string][]byte{"tls.key": []byte("-----KEY-----"), "tls.crt": chain,
				certpilotv1alpha1.BundleKey: concat([]byte("-----KEY-----\n"), chain)},
			wantShared: true,
		},
		"bundle of another key": {
			secretType: corev1.SecretTypeTLS,
			data:       map[string][]byte{"tls.key": []byte("-----OTHER-----\n"), "tls.crt": chain, certpilotv1alpha1.BundleKey: concat(key, chain)},
		},
		"bundle with more between": {
			secretType: corev1.SecretTypeTLS,
			data:       map[string][]byte{"tls.key": key, "tls.crt": chain, certpilotv1alpha1.BundleKey: concat(key, []byte("x\n"), chain)},
		},
		"no bundle": {
			secretType: corev1.SecretTypeTLS,
			data:       map[string][]byte{"tls.key": key, "tls.crt": chain},
		},
		"an opaque Secret": {
			secretType: corev1.SecretTypeOpaque,
			data:       map[string][]byte{"tls.key": key, "tls.crt": chain, certpilotv1alpha1.BundleKey: concat(key, chain)},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			want := map[string][]byte{}
			for k, v := range tc.data {
				want[k] = bytes.Clone(v)
			}
			secret := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "certpilot"}},
					OwnerReferences: []metav1.OwnerReference{certificateController("c")}},
				Type: tc.secretType, Data: tc.data,
			}
			out, err := SecretCacheTransform()(secret)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Secret)
			if got.ManagedFields != nil {
				t.Errorf("managedFields kept: %v", got.ManagedFields)
			}
			if len(got.Data) != len(want) {
				t.Fatalf("keys %v, want %v", got.Data, want)
			}
			for k, v := range want {
				if !bytes.Equal(got.Data[k], v) {
					t.Errorf("%s = %q, want %q", k, got.Data[k], v)
				}
			}
			bundle := got.Data[certpilotv1alpha1.BundleKey]
			shared := len(bundle) > 0 && unsafe.SliceData(got.Data["tls.key"]) == unsafe.SliceData(bundle)
			if shared != tc.wantShared {
				t.Errorf("tls.key shares bundle.pem's bytes: %v, want %v", shared, tc.wantShared)
			}
			if shared {
				// An append to tls.key must not write into bundle.pem.
				_ = append(got.Data["tls.key"], 'X')
				if !bytes.Equal(got.Data[certpilotv1alpha1.BundleKey], want[certpilotv1alpha1.BundleKey]) {
					t.Errorf("appending to tls.key changed bundle.pem")
				}
			}
		})
	}
}

func TestSecretCacheTransformSharesCA(t *testing.T) {
	transform := SecretCacheTransform()
	var first []byte
	for i := range 3 {
		secret := &corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{"ca.crt": []byte("-----ROOT-----\n")},
			ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{certificateController(fmt.Sprint(i))}}}
		out, err := transform(secret)
		if err != nil {
			t.Fatal(err)
		}
		ca := out.(*corev1.Secret).Data["ca.crt"]
		if string(ca) != "-----ROOT-----\n" {
			t.Fatalf("ca.crt = %q", ca)
		}
		if i == 0 {
			first = ca
		} else if unsafe.SliceData(ca) != unsafe.SliceData(first) {
			t.Errorf("Secret %d holds its own copy of ca.crt", i)
		}
	}
	if out, err := transform(&corev1.ConfigMap{}); err != nil || out == nil {
		t.Errorf("another kind: %v, %v", out, err)
	}
}

// certificateController is the controller owner reference certpilot puts on its certificate
// and claim Secrets.
func certificateController(name string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate", Name: name,
		UID: types.UID("uid-" + name), Controller: ptr.To(true)}
}

// TestSecretCacheTransformKeepsMetadataOnly: a Secret no Certificate controls (labelled as
// certpilot's by anyone, or an account key) keeps only its name, identity, type, certpilot's
// labels and its controller reference in the cache; one a Certificate controls is kept whole.
func TestSecretCacheTransformKeepsMetadataOnly(t *testing.T) {
	asController := func(ref metav1.OwnerReference) metav1.OwnerReference { ref.Controller = ptr.To(true); return ref }
	tests := map[string]struct {
		owners    []metav1.OwnerReference
		wantWhole bool
	}{
		"controlled by a Certificate":               {owners: []metav1.OwnerReference{certificateController("c")}, wantWhole: true},
		"no owner":                                  {},
		"a Certificate owns, not controls":          {owners: []metav1.OwnerReference{{APIVersion: certpilotv1alpha1.GroupVersion.String(), Kind: "Certificate", Name: "c", UID: "u"}}},
		"controlled by a Deployment":                {owners: []metav1.OwnerReference{asController(metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "d", UID: "u"})}},
		"controlled by another group's Certificate": {owners: []metav1.OwnerReference{asController(metav1.OwnerReference{APIVersion: "cert-manager.io/v1", Kind: "Certificate", Name: "c", UID: "u"})}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			labels := map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelCertificate: "c"}
			for i := range 1000 {
				labels[fmt.Sprintf("tenant.example/label-%d", i)] = "x"
			}
			secret := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: "tenant", Name: "s", UID: "uid-s", ResourceVersion: "7", Labels: labels,
					Annotations:     map[string]string{"certpilot.dev/claim-of": "s", "big": strings.Repeat("x", 200<<10)},
					Finalizers:      []string{"tenant.example/keep"},
					OwnerReferences: tc.owners, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "tenant"}},
				},
				Type: corev1.SecretTypeTLS,
				Data: map[string][]byte{"tls.key": []byte("db_password=hunter2"), "tls.crt": make([]byte, 1<<20)},
			}
			out, err := SecretCacheTransform()(secret)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Secret)
			if got.ManagedFields != nil {
				t.Errorf("managedFields kept")
			}
			if tc.wantWhole {
				if len(got.Data) != 2 || len(got.Annotations) != 2 || len(got.Labels) != len(labels) || len(got.Finalizers) != 1 {
					t.Errorf("a Certificate's Secret lost something: %d data keys, %d annotations, %d labels, finalizers %v",
						len(got.Data), len(got.Annotations), len(got.Labels), got.Finalizers)
				}
				return
			}
			if got.Data != nil || got.StringData != nil || got.Annotations != nil || got.Finalizers != nil {
				t.Errorf("kept data %d keys, annotations %d, finalizers %v; want none", len(got.Data), len(got.Annotations), got.Finalizers)
			}
			wantLabels := map[string]string{certpilotv1alpha1.LabelManagedBy: certpilotv1alpha1.ManagedByValue, certpilotv1alpha1.LabelCertificate: "c"}
			if fmt.Sprint(got.Labels) != fmt.Sprint(wantLabels) {
				t.Errorf("labels %v, want %v", got.Labels, wantLabels)
			}
			if got.Name != "s" || got.Namespace != "tenant" || got.UID != "uid-s" || got.ResourceVersion != "7" || got.Type != corev1.SecretTypeTLS {
				t.Errorf("identity lost: %s/%s uid %s rv %s type %s", got.Namespace, got.Name, got.UID, got.ResourceVersion, got.Type)
			}
			wantController := metav1.GetControllerOf(secret)
			if gotController := metav1.GetControllerOf(got); fmt.Sprint(gotController) != fmt.Sprint(wantController) || len(got.OwnerReferences) > 1 {
				t.Errorf("owner references %v, want only the controller %v", got.OwnerReferences, wantController)
			}
			if ControlledByCertificate(got) {
				t.Errorf("a Secret kept as metadata counts as controlled by a Certificate")
			}
		})
	}
}

// fresh returns a copy of s with its own bytes, as a decoder hands out each string it reads.
func fresh(s string) string { return strings.Clone(s) }

// sameString reports whether a and b share their bytes.
func sameString(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

// keyOf returns m's key equal to key, as the map stores it.
func keyOf[V any](m map[string]V, key string) string {
	for k := range m {
		if k == key {
			return k
		}
	}
	return ""
}

// TestSecretCacheTransformSharesStrings: the keys and the repeating values of two Secrets that
// the decoder gave their own copies end up sharing one copy, with the values unchanged; values
// that name one Secret (its Certificate, its order) are neither shared nor kept by the table.
func TestSecretCacheTransformSharesStrings(t *testing.T) {
	transform := SecretCacheTransform()
	secret := func(i int) *corev1.Secret {
		owner := certificateController(fresh(fmt.Sprintf("c%d", i)))
		owner.APIVersion, owner.Kind = fresh(owner.APIVersion), fresh(owner.Kind)
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: fresh(fmt.Sprintf("c%d-tls", i)), Namespace: fresh("team-a"),
				Labels: map[string]string{
					fresh(certpilotv1alpha1.LabelManagedBy):   fresh(certpilotv1alpha1.ManagedByValue),
					fresh(certpilotv1alpha1.LabelCertificate): fresh(fmt.Sprintf("shares-strings-c%d", i)),
				},
				Annotations: map[string]string{
					fresh("certpilot.dev/issuer-name"): fresh("letsencrypt"),
					fresh("certpilot.dev/acme-server"): fresh("https://acme.example/directory"),
					fresh("certpilot.dev/order"):       fresh(fmt.Sprintf("https://acme.example/order/shares-strings-%d", i)),
				},
				OwnerReferences: []metav1.OwnerReference{owner},
			},
			Type: corev1.SecretType(fresh(string(corev1.SecretTypeTLS))),
			Data: map[string][]byte{fresh("extra.pem"): []byte("x")},
		}
	}
	var got [2]*corev1.Secret
	for i := range got {
		want := secret(i)
		out, err := transform(want.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		got[i] = out.(*corev1.Secret)
		if !apiequality.Semantic.DeepEqual(got[i], want) {
			t.Fatalf("Secret %d changed: %v, want %v", i, got[i], want)
		}
	}
	a, b := got[0], got[1]
	shared := map[string][2]string{
		"namespace":             {a.Namespace, b.Namespace},
		"type":                  {string(a.Type), string(b.Type)},
		"managed-by key":        {keyOf(a.Labels, certpilotv1alpha1.LabelManagedBy), keyOf(b.Labels, certpilotv1alpha1.LabelManagedBy)},
		"managed-by value":      {a.Labels[certpilotv1alpha1.LabelManagedBy], b.Labels[certpilotv1alpha1.LabelManagedBy]},
		"certificate label key": {keyOf(a.Labels, certpilotv1alpha1.LabelCertificate), keyOf(b.Labels, certpilotv1alpha1.LabelCertificate)},
		"order key":             {keyOf(a.Annotations, "certpilot.dev/order"), keyOf(b.Annotations, "certpilot.dev/order")},
		"issuer-name value":     {a.Annotations["certpilot.dev/issuer-name"], b.Annotations["certpilot.dev/issuer-name"]},
		"acme-server value":     {a.Annotations["certpilot.dev/acme-server"], b.Annotations["certpilot.dev/acme-server"]},
		"owner apiVersion":      {a.OwnerReferences[0].APIVersion, b.OwnerReferences[0].APIVersion},
		"owner kind":            {a.OwnerReferences[0].Kind, b.OwnerReferences[0].Kind},
		"data key":              {keyOf(a.Data, "extra.pem"), keyOf(b.Data, "extra.pem")},
	}
	for what, pair := range shared {
		if !sameString(pair[0], pair[1]) {
			t.Errorf("%s %q: each Secret holds its own copy", what, pair[0])
		}
	}
	for _, s := range got {
		for _, distinct := range []string{s.Name, s.Labels[certpilotv1alpha1.LabelCertificate], s.Annotations["certpilot.dev/order"], s.OwnerReferences[0].Name} {
			if cacheStrings.has(distinct) {
				t.Errorf("%q, which names one Secret, is kept in the shared strings", distinct)
			}
		}
	}
}

// TestSecretCacheTransformSharesMetadataOnly: a Secret kept as metadata only shares its
// namespace and certpilot's label values too.
func TestSecretCacheTransformSharesMetadataOnly(t *testing.T) {
	var got []*corev1.Secret
	for range 2 {
		out, err := SecretCacheTransform()(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fresh("account"), Namespace: fresh("team-a"),
			Labels: map[string]string{fresh(certpilotv1alpha1.LabelManagedBy): fresh(certpilotv1alpha1.ManagedByValue)}}})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, out.(*corev1.Secret))
	}
	if a, b := got[0], got[1]; a.Namespace != "team-a" || !sameString(a.Namespace, b.Namespace) ||
		a.Labels[certpilotv1alpha1.LabelManagedBy] != certpilotv1alpha1.ManagedByValue ||
		!sameString(a.Labels[certpilotv1alpha1.LabelManagedBy], b.Labels[certpilotv1alpha1.LabelManagedBy]) {
		t.Errorf("namespace %q and managed-by %q not shared", a.Namespace, a.Labels[certpilotv1alpha1.LabelManagedBy])
	}
}

// TestCertificateCacheTransform: a cached Certificate is what the API holds but managedFields,
// its repeating strings shared with the next Certificate's, and what names it left alone.
func TestCertificateCacheTransform(t *testing.T) {
	certificate := func(i int) *certpilotv1alpha1.Certificate {
		now := metav1.Now()
		name := fresh(fmt.Sprintf("cache-transform-c%d", i))
		return &certpilotv1alpha1.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: fresh("team-a"), Finalizers: []string{fresh("certpilot.dev/finalizer")},
				Labels:        map[string]string{fresh("team"): fresh("a")},
				Annotations:   map[string]string{fresh(certpilotv1alpha1.AnnotationRenew): fresh(fmt.Sprintf("2026-12-07T01:%02d:00Z", i))},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
			Spec: certpilotv1alpha1.CertificateSpec{
				DNSNames: []string{fresh(fmt.Sprintf("c%d.example", i))}, SecretName: fresh(name + "-tls"),
				IssuerRef:          certpilotv1alpha1.IssuerReference{Kind: fresh("ClusterIssuer"), Name: fresh("letsencrypt")},
				FallbackIssuerRefs: []certpilotv1alpha1.IssuerReference{{Kind: fresh("Issuer"), Name: fresh("backup")}},
				PrivateKey:         &certpilotv1alpha1.PrivateKey{Algorithm: fresh("ECDSA"), Size: 256},
				Solver: &certpilotv1alpha1.Solver{TLSALPN01: &certpilotv1alpha1.TLSALPN01Solver{
					LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: fresh("edge"), Namespace: fresh("ingress")}, ProbeAddress: fresh("10.0.0.1:443")}},
				Solvers: []certpilotv1alpha1.NamedSolver{{Solver: certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
					Nameservers: []string{fresh("10.0.0.53:53")}, CNAMEStrategy: fresh("Follow"),
					RFC2136: &certpilotv1alpha1.RFC2136DNS01{Nameserver: fresh("10.0.0.53:53"), TSIGKeyName: fresh("certpilot."),
						TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: fresh("tsig"), Key: fresh("secret")}}}}}},
			},
			Status: certpilotv1alpha1.CertificateStatus{
				Conditions: []metav1.Condition{{Type: fresh("Ready"), Status: metav1.ConditionStatus(fresh("True")), Reason: fresh("Issued"),
					Message: fresh(fmt.Sprintf("valid until 2027-03-%02d", i+1)), LastTransitionTime: now}},
				RenewalTimeSource: fresh("ARI"), SerialNumber: fresh(fmt.Sprintf("cache-transform-%d", i)),
				IssuerRef:     &certpilotv1alpha1.IssuerReference{Kind: fresh("ClusterIssuer"), Name: fresh("letsencrypt")},
				CurrentIssuer: &certpilotv1alpha1.CurrentIssuerStatus{Kind: fresh("ClusterIssuer"), Name: fresh("letsencrypt")},
				Order: &certpilotv1alpha1.OrderStatus{URL: fresh(fmt.Sprintf("https://acme.example/order/cache-transform-%d", i)), State: fresh("pending"),
					Challenges: []certpilotv1alpha1.ChallengeStatus{{Type: fresh("tls-alpn-01"), State: fresh("pending"),
						Token: fresh(fmt.Sprintf("cache-transform-token-%d", i))}}},
			},
		}
	}
	transform := CertificateCacheTransform()
	var got [2]*certpilotv1alpha1.Certificate
	for i := range got {
		want := certificate(i)
		out, err := transform(want.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		got[i] = out.(*certpilotv1alpha1.Certificate)
		want.ManagedFields = nil
		if !apiequality.Semantic.DeepEqual(got[i], want) {
			t.Fatalf("Certificate %d changed: %+v, want %+v", i, got[i], want)
		}
	}
	a, b := got[0], got[1]
	pairs := map[string][2]string{
		"namespace":         {a.Namespace, b.Namespace},
		"finalizer":         {a.Finalizers[0], b.Finalizers[0]},
		"label key":         {keyOf(a.Labels, "team"), keyOf(b.Labels, "team")},
		"issuerRef kind":    {a.Spec.IssuerRef.Kind, b.Spec.IssuerRef.Kind},
		"issuerRef name":    {a.Spec.IssuerRef.Name, b.Spec.IssuerRef.Name},
		"fallback name":     {a.Spec.FallbackIssuerRefs[0].Name, b.Spec.FallbackIssuerRefs[0].Name},
		"key algorithm":     {a.Spec.PrivateKey.Algorithm, b.Spec.PrivateKey.Algorithm},
		"load balancer":     {a.Spec.Solver.TLSALPN01.LoadBalancer.Name, b.Spec.Solver.TLSALPN01.LoadBalancer.Name},
		"probe address":     {a.Spec.Solver.TLSALPN01.ProbeAddress, b.Spec.Solver.TLSALPN01.ProbeAddress},
		"nameserver":        {a.Spec.Solvers[0].DNS01.RFC2136.Nameserver, b.Spec.Solvers[0].DNS01.RFC2136.Nameserver},
		"TSIG key":          {a.Spec.Solvers[0].DNS01.RFC2136.TSIGKeyName, b.Spec.Solvers[0].DNS01.RFC2136.TSIGKeyName},
		"condition type":    {a.Status.Conditions[0].Type, b.Status.Conditions[0].Type},
		"condition status":  {string(a.Status.Conditions[0].Status), string(b.Status.Conditions[0].Status)},
		"condition reason":  {a.Status.Conditions[0].Reason, b.Status.Conditions[0].Reason},
		"renewal source":    {a.Status.RenewalTimeSource, b.Status.RenewalTimeSource},
		"status issuerRef":  {a.Status.IssuerRef.Name, b.Status.IssuerRef.Name},
		"current issuer":    {a.Status.CurrentIssuer.Kind, b.Status.CurrentIssuer.Kind},
		"order state":       {a.Status.Order.State, b.Status.Order.State},
		"challenge type":    {a.Status.Order.Challenges[0].Type, b.Status.Order.Challenges[0].Type},
		"challenge state":   {a.Status.Order.Challenges[0].State, b.Status.Order.Challenges[0].State},
		"renew annotation":  {keyOf(a.Annotations, certpilotv1alpha1.AnnotationRenew), keyOf(b.Annotations, certpilotv1alpha1.AnnotationRenew)},
		"across fields (1)": {a.Spec.IssuerRef.Name, b.Status.CurrentIssuer.Name},
		"across fields (2)": {a.Spec.Solvers[0].DNS01.Nameservers[0], b.Spec.Solvers[0].DNS01.RFC2136.Nameserver},
	}
	for what, pair := range pairs {
		if !sameString(pair[0], pair[1]) {
			t.Errorf("%s %q: each Certificate holds its own copy", what, pair[0])
		}
	}
	for _, c := range got {
		for _, distinct := range []string{c.Name, c.Spec.SecretName, c.Spec.DNSNames[0], c.Annotations[certpilotv1alpha1.AnnotationRenew],
			c.Status.Conditions[0].Message, c.Status.SerialNumber, c.Status.Order.URL, c.Status.Order.Challenges[0].Token} {
			if cacheStrings.has(distinct) {
				t.Errorf("%q, which names or describes one Certificate, is kept in the shared strings", distinct)
			}
		}
	}
	if out, err := transform(&corev1.ConfigMap{}); err != nil || out == nil {
		t.Errorf("another kind: %v, %v", out, err)
	}
}

// TestStringTable: the table hands out the first copy of a string; once full, it hands back
// what it is given and keeps nothing more.
func TestStringTable(t *testing.T) {
	table := &stringTable{values: map[string]string{}, max: 2}
	first := table.get(fresh("Issuer"))
	if again := table.get(fresh("Issuer")); again != "Issuer" || !sameString(first, again) {
		t.Errorf("second Issuer %q not the first copy", again)
	}
	table.get("Ready")
	third := fresh("Stalled")
	if got := table.get(third); !sameString(got, third) || table.has("Stalled") {
		t.Errorf("a full table kept Stalled")
	}
	if got := table.get(""); got != "" {
		t.Errorf("empty string: %q", got)
	}
}

// has reports whether the table holds s.
func (t *stringTable) has(s string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.values[s]
	return ok
}
