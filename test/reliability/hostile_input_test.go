package reliability

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// hostileCase is one malformed or hostile object. It is refused at admission (admission is a
// part of the apiserver's message) or, once created, ends with Ready False for reason (and
// Stalled True when stalled is set; Ready True when reason is AccountRegistered or UpToDate).
type hostileCase struct {
	name string
	// setup objects are created first and must be accepted (Secrets the object names).
	setup []client.Object
	// object is the hostile object itself.
	object    client.Object
	admission string
	reason    string
	stalled   bool
	// afterGood cases are created once the good Certificate is Ready (they take its Secret's
	// name, which it must hold first).
	afterGood bool
}

// eabKeyID and eabHMAC are the external account binding Pebble knows; the tenant's Issuer
// binds its account with them.
const (
	eabKeyID = "hostile-eab"
	eabHMAC  = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
)

// TestHostileInput creates more than thirty malformed or hostile Certificates, Issuers and
// Secrets at once, beside a good Certificate, against the real stack. Each is refused at
// admission or ends in a precise condition; the manager never crashes; the good Certificate is
// Ready as fast as alone; every write of the manager lands in the namespace of the object that
// caused it; no Secret certpilot does not own changes; and nothing the suite produced (logs at
// the most verbose level, Events, status, metrics) holds a byte of any private key, EAB MAC key
// or TSIG secret.
//
// Its subtests are the steps of one scenario, run in order: create/<case> (refused at
// admission with its message, or admitted), condition/<case> (its Ready and Stalled
// conditions), then the checks over the whole run. Select a case with -run only to read its
// result: the scenario needs every case created.
func TestHostileInput(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	started := time.Now()
	h := startHostileInput(t)
	s := h.s
	cases := h.cases(t)

	// The good Certificate first, then everything else at once; the afterGood cases only once
	// the good one holds its Secret's name.
	good := s.TLSALPN01Certificate("good", "good.hostile.test")
	goodCreated := time.Now()
	if err := kube.Client.Create(ctx, good); err != nil {
		t.Fatal(err)
	}
	// One more in the stack's namespace: its challenge stays published (the self-check dials an
	// address the edge's owner allowed but nothing serves), for the edge check below.
	unserved := s.TLSALPN01Certificate("unserved", "unserved.hostile.test")
	unserved.Spec.Solver.TLSALPN01.ProbeAddress = testenv.FreeAddress(t)
	if err := s.AllowProbeAddress(ctx, unserved.Spec.Solver.TLSALPN01.ProbeAddress); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Create(ctx, unserved); err != nil {
		t.Fatal(err)
	}
	var created []hostileCase
	var refused int
	createCase := func(c hostileCase) {
		t.Run("create/"+c.name, func(t *testing.T) {
			for _, obj := range c.setup {
				if err := create(ctx, obj); err != nil {
					t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
				}
			}
			err := kube.Client.Create(ctx, c.object)
			switch {
			case c.admission != "" && err == nil:
				t.Errorf("admitted, want refused with %q", c.admission)
			case c.admission != "" && !strings.Contains(err.Error(), c.admission):
				t.Errorf("refused with %q, want a message with %q", err, c.admission)
			case c.admission != "":
				refused++
			case err != nil:
				t.Errorf("refused at admission: %v", err)
			default:
				created = append(created, c)
			}
		})
	}
	for _, c := range cases {
		if !c.afterGood {
			createCase(c)
		}
	}
	testenv.Eventually(t, 2*time.Minute, "the good Certificate Ready beside the hostile objects", func() error {
		return conditionIs(ctx, good, "UpToDate", false)
	})
	goodReady := time.Since(goodCreated)
	for _, c := range cases {
		if c.afterGood {
			createCase(c)
		}
	}

	// Every admitted object ends in its condition. They get there side by side, so each
	// subtest waits for what is left of one deadline; then all must hold at once.
	deadline := time.Now().Add(2 * time.Minute)
	remaining := func() time.Duration { return max(time.Until(deadline), 10*time.Second) }
	for _, c := range created {
		t.Run("condition/"+c.name, func(t *testing.T) {
			testenv.Eventually(t, remaining(), "Ready "+c.reason, func() error {
				return conditionIs(ctx, c.object, c.reason, c.stalled)
			})
			if cert, ok := c.object.(*certpilotv1alpha1.Certificate); ok && c.stalled && cert.Status.Order != nil {
				t.Errorf("Stalled %s with an order at the CA: %+v", c.reason, cert.Status.Order)
			}
		})
	}
	t.Run("every hostile object in its condition at once", func(t *testing.T) {
		testenv.Eventually(t, remaining(), "every hostile object in its condition", func() error {
			var problems []string
			for _, c := range created {
				if err := conditionIs(ctx, c.object, c.reason, c.stalled); err != nil {
					problems = append(problems, fmt.Sprintf("%s: %v", c.name, err))
				}
			}
			if len(problems) > 0 {
				return fmt.Errorf("%d not there:\n%s", len(problems), strings.Join(problems, "\n"))
			}
			return nil
		})
	})
	admitted := len(created)
	t.Logf("%d hostile objects: %d refused at admission, %d in their precise condition; the good Certificate was Ready %s after it was created",
		refused+admitted, refused, admitted, goodReady.Round(100*time.Millisecond))
	t.Run("at least thirty hostile objects", func(t *testing.T) {
		if refused+admitted < 30 {
			t.Errorf("only %d hostile objects", refused+admitted)
		}
	})
	t.Run("no validation of a refused load balancer or probe address", func(t *testing.T) {
		if n := s.Pebble.ValidationAttempts("crossns.tenant.test") + s.Pebble.ValidationAttempts("probeapi.tenant.test"); n != 0 {
			t.Errorf("Pebble validated names whose load balancer or probe address was refused (%d attempts)", n)
		}
	})
	t.Run("manager healthy", func(t *testing.T) { managerHealthy(t, s) })

	// The edge never hands a challenge certificate to a client that does not ask for acme-tls/1.
	t.Run("edge serves challenges to acme-tls/1 only", func(t *testing.T) {
		edgeServesChallengesToACMEOnly(t, s, "unserved.hostile.test")
	})

	t.Run("writes stay in the namespace of their cause", func(t *testing.T) {
		stackNames := []string{"good", "copycat", "unserved"}
		checkWritesStayHome(t, started, map[string]func(event testenv.AuditEvent) bool{
			h.tenant: func(testenv.AuditEvent) bool { return true },
			h.victim: func(testenv.AuditEvent) bool { return false },
			s.Namespace: func(e testenv.AuditEvent) bool {
				switch e.Resource {
				case "events":
					return true
				case "deployments":
					return e.Name == testenv.EdgeDeployment
				case "secrets":
					return strings.HasPrefix(e.Name, testenv.EdgeDeployment+certpilotv1alpha1.ChallengeSecretSuffix) || slices.ContainsFunc(stackNames, func(name string) bool {
						return strings.HasPrefix(e.Name, name+"-")
					})
				case "certificates":
					return slices.Contains(stackNames, e.Name)
				}
				return false
			},
			s.Namespace + "-system": func(e testenv.AuditEvent) bool { return e.Resource == "secrets" || e.Resource == "events" },
			"":                      func(e testenv.AuditEvent) bool { return e.Resource == "clusterissuers" && e.Subresource == "status" },
		})
	})

	// Secrets certpilot does not own were never modified; the ones it must not replace either.
	t.Run("foreign Secrets unchanged", func(t *testing.T) {
		tenant, victim := h.tenant, h.victim
		for _, key := range []client.ObjectKey{
			{Namespace: victim, Name: "victim-tls"}, {Namespace: tenant, Name: "foreign-tls"}, {Namespace: tenant, Name: "garbage-account"},
			{Namespace: tenant, Name: "noise-account"}, {Namespace: tenant, Name: "nokey-account"}, {Namespace: tenant, Name: "ed25519-account"},
			{Namespace: tenant, Name: "tsig"}, {Namespace: tenant, Name: "tenant-eab"},
		} {
			unchanged(t, key)
		}
	})

	// Last: nothing the run produced holds a byte of a secret.
	t.Run("no secret in any output", func(t *testing.T) {
		scanForSecrets(t, s, []string{s.Namespace, s.Namespace + "-system", h.tenant, h.victim})
	})
}

// hostileInput is the stack TestHostileInput runs on: a tenant namespace with its own load
// balancer (one probe address allowed, where nothing listens) and its own Ready Issuer bound
// with an external account, and a victim namespace whose load balancer opts no namespace in.
type hostileInput struct {
	s              *testenv.Stack
	tenant, victim string
	apiserver      *url.URL
	probeNowhere   string
	tenantIssuer   *certpilotv1alpha1.Issuer
}

func startHostileInput(t *testing.T) *hostileInput {
	t.Helper()
	ctx := context.Background()
	h := &hostileInput{s: startHostileStack(t, "hostile", testenv.PebbleOptions{
		NonceRejectPercent: 5, ExternalAccountMACKeys: map[string]string{eabKeyID: eabHMAC},
	})}
	h.tenant, h.victim = testenv.Namespace(t, "hostile-tenant"), testenv.Namespace(t, "hostile-victim")
	createNamespaces(t, h.tenant, h.victim)
	deleteWhenDone(t, h.s.Namespace, h.tenant)

	var err error
	if h.apiserver, err = url.Parse(kube.Config.Host); err != nil {
		t.Fatal(err)
	}
	h.probeNowhere = testenv.FreeAddress(t) // nothing listens there
	for _, lb := range []*appsv1.Deployment{
		loadBalancer(h.tenant, "lb", h.probeNowhere), loadBalancer(h.victim, "lb", ""),
	} {
		if err := kube.Client.Create(ctx, lb); err != nil {
			t.Fatal(err)
		}
	}
	h.tenantIssuer = issuer(h.tenant, "tenant-acme", h.s.Pebble.DirectoryURL(), h.s.Pebble.CABundle, "tenant-account")
	h.tenantIssuer.Spec.ACME.ExternalAccountBinding = &certpilotv1alpha1.ExternalAccountBinding{
		KeyID: eabKeyID, KeySecretRef: certpilotv1alpha1.SecretKeySelector{Name: "tenant-eab", Key: "hmac"},
	}
	for _, obj := range []client.Object{
		secret(h.tenant, "tenant-eab", map[string][]byte{"hmac": []byte(eabHMAC)}),
		h.tenantIssuer,
		// Secrets certpilot does not own: never modified.
		secret(h.victim, "victim-tls", map[string][]byte{"tls.crt": []byte("the victim's"), "tls.key": pemKey(t, "ecdsa")}),
		secret(h.tenant, "foreign-tls", map[string][]byte{"tls.crt": []byte("the tenant's"), "tls.key": pemKey(t, "ecdsa")}),
	} {
		if err := create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// cases are the hostile objects: refused at admission first, then the ones that end in a
// precise condition.
func (h *hostileInput) cases(t *testing.T) []hostileCase {
	s, tenant, victim, apiserver, probeNowhere, tenantIssuer := h.s, h.tenant, h.victim, h.apiserver, h.probeNowhere, h.tenantIssuer
	cert := func(namespace, name string, dnsNames ...string) *certpilotv1alpha1.Certificate {
		c := s.TLSALPN01Certificate(name, dnsNames...)
		c.Namespace = namespace
		c.Spec.Solver.TLSALPN01.LoadBalancer.Name = "lb"
		c.Spec.Solver.TLSALPN01.ProbeAddress = probeNowhere
		return c
	}
	tenantCert := func(name string, mutate func(*certpilotv1alpha1.Certificate)) *certpilotv1alpha1.Certificate {
		c := cert(tenant, name, name+".tenant.test")
		mutate(c)
		return c
	}
	rfc2136 := func(nameserver, secretName, key string) *certpilotv1alpha1.Solver {
		return &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{RFC2136: &certpilotv1alpha1.RFC2136DNS01{
			Nameserver: nameserver, TSIGKeyName: "certpilot.",
			TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: secretName, Key: key},
		}}}
	}
	tenantIssuerWith := func(name string, mutate func(*certpilotv1alpha1.Issuer)) *certpilotv1alpha1.Issuer {
		i := issuer(tenant, name, s.Pebble.DirectoryURL(), s.Pebble.CABundle, name+"-account")
		mutate(i)
		return i
	}
	manyNames := func(n int) []string {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("n%03d.many.tenant.test", i)
		}
		return names
	}
	const wildcardMessage = "wildcard names (*.example.com) can only be validated by the dns01 solver"
	const invalidName = "not a valid DNS name"

	cases := []hostileCase{
		// Refused at admission: Certificates.
		{name: "no names", object: tenantCert("nonames", func(c *certpilotv1alpha1.Certificate) { c.Spec.DNSNames = []string{} }),
			admission: "set at least one of dnsNames or ipAddresses"},
		{name: "uppercase name", object: tenantCert("upper", func(c *certpilotv1alpha1.Certificate) { c.Spec.DNSNames = []string{"WWW.Tenant.test"} }), admission: invalidName},
		{name: "IP address as a name", object: tenantCert("ip", func(c *certpilotv1alpha1.Certificate) { c.Spec.DNSNames = []string{"127.0.0.1"} }), admission: invalidName},
		{name: "trailing dot", object: tenantCert("dot", func(c *certpilotv1alpha1.Certificate) { c.Spec.DNSNames = []string{"www.tenant.test."} }), admission: invalidName},
		{name: "label of 64 characters", object: tenantCert("label", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.DNSNames = []string{strings.Repeat("a", 64) + ".tenant.test"}
		}), admission: invalidName},
		{name: "name of 254 characters", object: tenantCert("long", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.DNSNames = []string{strings.Repeat(strings.Repeat("a", 60)+".", 4) + "tenant.test"}
		}), admission: "Too long: may not be more than 253 bytes"},
		{name: "control characters and a space in a name", object: tenantCert("ctrl", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.DNSNames = []string{"www.tenant.test\n\x00 evil"}
		}), admission: invalidName},
		{name: "wildcard on tls-alpn-01", object: tenantCert("wild-alpn", func(c *certpilotv1alpha1.Certificate) { c.Spec.DNSNames = []string{"*.tenant.test"} }),
			admission: wildcardMessage},
		{name: "wildcard on http-01", object: tenantCert("wild-http", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.DNSNames = []string{"*.tenant.test"}
			c.Spec.Solver = &certpilotv1alpha1.Solver{HTTP01: &certpilotv1alpha1.HTTP01Solver{LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: "lb"}}}
		}), admission: wildcardMessage},
		{name: "wildcard on tls-alpn-01 through spec.solvers", object: tenantCert("wild-solvers", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.DNSNames = []string{"wild-solvers.tenant.test", "*.tenant.test"}
			c.Spec.Solvers = []certpilotv1alpha1.NamedSolver{{DNSNames: []string{"*.tenant.test"}, Solver: *c.Spec.Solver.DeepCopy()}}
		}), admission: wildcardMessage},
		{name: "101 names", object: tenantCert("many101", func(c *certpilotv1alpha1.Certificate) { c.Spec.DNSNames = manyNames(101) }),
			admission: "must have at most 100 items"},
		{name: "a name twice", object: tenantCert("twice", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.DNSNames = []string{"twice.tenant.test", "twice.tenant.test"}
		}), admission: "Duplicate value"},
		{name: "secretName not a Secret name", object: tenantCert("badsecret", func(c *certpilotv1alpha1.Certificate) { c.Spec.SecretName = "Bad_Name" }),
			admission: "spec.secretName in body should match"},
		{name: "secretName of another Certificate's pending key", object: tenantCert("pending", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.SecretName = "good-certpilot-next-key"
		}), admission: "secretName must not end in -certpilot-next-key or -certpilot-claim"},
		{name: "secretName of another Certificate's claim", object: tenantCert("claimer", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.SecretName = "good-tls-certpilot-claim"
		}), admission: "secretName must not end in -certpilot-next-key or -certpilot-claim"},
		{name: "two solver types", object: tenantCert("twosolvers", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver.HTTP01 = &certpilotv1alpha1.HTTP01Solver{LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: "lb"}}
		}), admission: "set exactly one solver"},
		{name: "renewBefore of a minute", object: tenantCert("renewsoon", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.RenewBefore = &metav1.Duration{Duration: time.Minute}
		}), admission: "renewBefore must be at least 5m"},
		{name: "probeAddress as a URL", object: tenantCert("probeurl", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver.TLSALPN01.ProbeAddress = kube.Config.Host + "/api"
		}), admission: "spec.solver.tlsALPN01.probeAddress in body should match"},
		{name: "RSA key of 1024 bits", object: tenantCert("rsa1024", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.PrivateKey = &certpilotv1alpha1.PrivateKey{Algorithm: "RSA", Size: 1024}
		}), admission: "RSA keys must be 2048, 3072 or 4096 bits"},
		{name: "DSA key", object: tenantCert("dsa", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.PrivateKey = &certpilotv1alpha1.PrivateKey{Algorithm: "DSA"}
		}), admission: "Unsupported value: \"DSA\""},
		{name: "issuerRef of kind Secret", object: tenantCert("kindsecret", func(c *certpilotv1alpha1.Certificate) { c.Spec.IssuerRef.Kind = "Secret" }),
			admission: "Unsupported value: \"Secret\""},
		{name: "spec.solvers naming a name the Certificate lacks", object: tenantCert("stranger", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solvers = []certpilotv1alpha1.NamedSolver{{DNSNames: []string{"other.tenant.test"}, Solver: *c.Spec.Solver.DeepCopy()}}
		}), admission: "every name in spec.solvers[].dnsNames must be one of spec.dnsNames"},
		{name: "load balancer namespace not a namespace name", object: tenantCert("lbns", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver.TLSALPN01.LoadBalancer.Namespace = "Kube System"
		}), admission: "spec.solver.tlsALPN01.loadBalancer.namespace in body should match"},
		{name: "rfc2136 nameserver not host:port", object: tenantCert("nsbad", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver = rfc2136("ns.tenant.test", "tsig", "secret")
		}), admission: "spec.solver.dns01.rfc2136.nameserver in body should match"},
		{name: "a 300 kB renew annotation", object: tenantCert("hugeannotation", func(c *certpilotv1alpha1.Certificate) {
			c.Annotations = map[string]string{certpilotv1alpha1.AnnotationRenew: strings.Repeat("x", 300<<10)}
		}), admission: "metadata.annotations: Too long: may not be more than 262144 bytes"},

		// Refused at admission: Issuers.
		{name: "issuer on plain HTTP", object: tenantIssuerWith("plainhttp", func(i *certpilotv1alpha1.Issuer) {
			i.Spec.ACME.Server = "http://" + s.Pebble.ListenAddress + "/dir"
		}), admission: "server must be an https:// ACME directory URL"},
		{name: "issuer on a file URL", object: tenantIssuerWith("fileurl", func(i *certpilotv1alpha1.Issuer) { i.Spec.ACME.Server = "file:///etc/passwd" }),
			admission: "server must be an https:// ACME directory URL"},
		{name: "issuer email without @", object: tenantIssuerWith("email", func(i *certpilotv1alpha1.Issuer) { i.Spec.ACME.Email = "nobody" }),
			admission: "spec.acme.email in body should match"},
		{name: "account key Secret name with a path", object: tenantIssuerWith("pathkey", func(i *certpilotv1alpha1.Issuer) {
			i.Spec.ACME.PrivateKeySecretRef.Name = "../kube-system/token"
		}), admission: "spec.acme.privateKeySecretRef.name in body should match"},
		{name: "profile with spaces", object: tenantIssuerWith("profile", func(i *certpilotv1alpha1.Issuer) { i.Spec.ACME.Profile = "no such profile" }),
			admission: "spec.acme.profile in body should match"},

		// Precise conditions: Issuers.
		{name: "issuer pointing at the apiserver", object: tenantIssuerWith("apiserver", func(i *certpilotv1alpha1.Issuer) {
			i.Spec.ACME.Server, i.Spec.ACME.CABundle = kube.Config.Host+"/", kube.Config.CAData
		}), reason: "InvalidACMEServer", stalled: true},
		{name: "caBundle that is not PEM", object: tenantIssuerWith("notpem", func(i *certpilotv1alpha1.Issuer) {
			i.Spec.ACME.CABundle = []byte("this is not PEM\x00\xff")
		}), reason: "InvalidACMEServer", stalled: true},
		{name: "account key Secret holding garbage", setup: []client.Object{secret(tenant, "garbage-account", map[string][]byte{"tls.key": []byte("-----BEGIN EC PRIVATE KEY-----\ngarbage\n-----END EC PRIVATE KEY-----\n")})},
			object: tenantIssuerWith("garbage", func(*certpilotv1alpha1.Issuer) {}), reason: "InvalidAccountKey", stalled: true},
		{name: "account key Secret of 900 kB of noise", setup: []client.Object{secret(tenant, "noise-account", map[string][]byte{"tls.key": noise(t, 900<<10)})},
			object: tenantIssuerWith("noise", func(*certpilotv1alpha1.Issuer) {}), reason: "InvalidAccountKey", stalled: true},
		{name: "account key Secret without tls.key", setup: []client.Object{secret(tenant, "nokey-account", map[string][]byte{"key.pem": pemKey(t, "ecdsa")})},
			object: tenantIssuerWith("nokey", func(*certpilotv1alpha1.Issuer) {}), reason: "InvalidAccountKey", stalled: true},
		{name: "Ed25519 account key", setup: []client.Object{secret(tenant, "ed25519-account", map[string][]byte{"tls.key": pemKey(t, "ed25519")})},
			object: tenantIssuerWith("ed25519", func(*certpilotv1alpha1.Issuer) {}), reason: "UnsupportedAccountKey", stalled: true},
		{name: "RSA account key of 1024 bits", setup: []client.Object{secret(tenant, "rsa1024-account", map[string][]byte{"tls.key": pemKey(t, "rsa1024")})},
			object: tenantIssuerWith("rsa1024", func(*certpilotv1alpha1.Issuer) {}), reason: "UnsupportedAccountKey", stalled: true},
		{name: "EAB Secret that is not there", object: tenantIssuerWith("eabmissing", func(i *certpilotv1alpha1.Issuer) {
			i.Spec.ACME.ExternalAccountBinding = &certpilotv1alpha1.ExternalAccountBinding{KeyID: eabKeyID, KeySecretRef: certpilotv1alpha1.SecretKeySelector{Name: "nowhere", Key: "hmac"}}
		}), reason: "MissingEABSecret", stalled: true},
		{name: "EAB MAC key that is not base64url", setup: []client.Object{secret(tenant, "eab-garbage", map[string][]byte{"hmac": []byte("%%% not base64 %%%")})},
			object: tenantIssuerWith("eabgarbage", func(i *certpilotv1alpha1.Issuer) {
				i.Spec.ACME.ExternalAccountBinding = &certpilotv1alpha1.ExternalAccountBinding{KeyID: eabKeyID, KeySecretRef: certpilotv1alpha1.SecretKeySelector{Name: "eab-garbage", Key: "hmac"}}
			}), reason: "InvalidEABSecret", stalled: true},
		{name: "profile the CA does not offer", object: tenantIssuerWith("noprofile", func(i *certpilotv1alpha1.Issuer) { i.Spec.ACME.Profile = "nosuch" }),
			reason: "UnknownProfile", stalled: true},
		{name: "account key Secret named like another issuer's", object: tenantIssuerWith("twin", func(i *certpilotv1alpha1.Issuer) {
			i.Spec.ACME.PrivateKeySecretRef.Name = "tenant-account"
			i.Spec.ACME.ExternalAccountBinding = tenantIssuer.Spec.ACME.ExternalAccountBinding
		}), reason: "AccountRegistered"},

		// Precise conditions: Certificates.
		{name: "issuer that does not exist", object: tenantCert("noissuer", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.IssuerRef = certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "nowhere"}
		}), reason: "IssuerNotFound"},
		{name: "issuer that is not Ready", object: tenantCert("brokenissuer", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.IssuerRef = certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "garbage"}
		}), reason: "IssuerNotReady"},
		{name: "secretName of a Secret certpilot does not own", object: tenantCert("foreign", func(c *certpilotv1alpha1.Certificate) { c.Spec.SecretName = "foreign-tls" }),
			reason: "SecretNotOwned", stalled: true},
		{name: "secretName of an issuer's account key", object: tenantCert("accountkey", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.IssuerRef = certpilotv1alpha1.IssuerReference{Kind: "Issuer", Name: "tenant-acme"}
			c.Spec.SecretName = "tenant-account"
		}), reason: "SecretNotOwned", stalled: true},
		{name: "load balancer in another namespace", object: tenantCert("crossns", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver.TLSALPN01.LoadBalancer.Namespace = victim
		}), reason: "LoadBalancerNotAllowed", stalled: true},
		{name: "http-01 load balancer in another namespace through spec.solvers", object: tenantCert("crossns-solvers", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.DNSNames = append(c.Spec.DNSNames, "other.crossns.tenant.test")
			c.Spec.Solvers = []certpilotv1alpha1.NamedSolver{{DNSNames: []string{"other.crossns.tenant.test"}, Solver: certpilotv1alpha1.Solver{
				HTTP01: &certpilotv1alpha1.HTTP01Solver{LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: "lb", Namespace: victim}},
			}}}
		}), reason: "LoadBalancerNotAllowed", stalled: true},
		{name: "load balancer that does not exist", object: tenantCert("nolb", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver.TLSALPN01.LoadBalancer.Name = "nowhere"
		}), reason: "LoadBalancerNotFound"},
		{name: "probeAddress aimed at the apiserver", object: tenantCert("probeapi", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver.TLSALPN01.ProbeAddress = apiserver.Host
		}), reason: "ProbeAddressNotAllowed", stalled: true},
		{name: "http-01 probeAddress aimed at the apiserver", object: tenantCert("probeapi-http", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver = &certpilotv1alpha1.Solver{HTTP01: &certpilotv1alpha1.HTTP01Solver{
				LoadBalancer: certpilotv1alpha1.LoadBalancerRef{Name: "lb"}, ProbeAddress: apiserver.Host,
			}}
		}), reason: "ProbeAddressNotAllowed", stalled: true},
		{name: "TSIG Secret that is not there", object: tenantCert("tsigmissing", func(c *certpilotv1alpha1.Certificate) {
			c.Spec.Solver = rfc2136(probeNowhere, "nowhere", "secret")
		}), reason: "MissingTSIGSecret", stalled: true},
		{name: "TSIG Secret without the key", setup: []client.Object{secret(tenant, "tsig-nokey", map[string][]byte{"other": []byte("c2VjcmV0")})},
			object: tenantCert("tsignokey", func(c *certpilotv1alpha1.Certificate) { c.Spec.Solver = rfc2136(probeNowhere, "tsig-nokey", "secret") }),
			reason: "InvalidTSIGSecret", stalled: true},
		{name: "TSIG secret that is not base64", setup: []client.Object{secret(tenant, "tsig-garbage", map[string][]byte{"secret": []byte("%%% not base64 %%%")})},
			object: tenantCert("tsiggarbage", func(c *certpilotv1alpha1.Certificate) {
				c.Spec.Solver = rfc2136(probeNowhere, "tsig-garbage", "secret")
			}),
			reason: "InvalidTSIGSecret", stalled: true},
		{name: "rfc2136 nameserver aimed at the apiserver", setup: []client.Object{secret(tenant, "tsig", map[string][]byte{"secret": []byte(tsigSecret)})},
			object: tenantCert("nsapi", func(c *certpilotv1alpha1.Certificate) { c.Spec.Solver = rfc2136(apiserver.Host, "tsig", "secret") }),
			reason: "DNSServerUnreachable"},
		{name: "no solver anywhere", object: tenantCert("nosolver", func(c *certpilotv1alpha1.Certificate) { c.Spec.Solver = nil }),
			reason: "NoSolver", stalled: true},
		{name: "100 names on a load balancer that does not serve them", object: tenantCert("many", func(c *certpilotv1alpha1.Certificate) { c.Spec.DNSNames = manyNames(100) }),
			reason: "SelfCheckFailed"},
	}
	// copycat takes the good Certificate's secretName; its load balancer is the stack's edge.
	copycat := cert(s.Namespace, "copycat", "copycat.hostile.test")
	copycat.Spec.SecretName = "good-tls"
	copycat.Spec.Solver.TLSALPN01.LoadBalancer.Name = testenv.EdgeDeployment
	copycat.Spec.Solver.TLSALPN01.ProbeAddress = fmt.Sprintf("127.0.0.1:%d", s.Pebble.TLSPort)
	return append(cases, hostileCase{name: "secretName of another Certificate's Secret", object: copycat,
		reason: "SecretOwnedByAnotherCertificate", stalled: true, afterGood: true})
}

// tsigSecret is the TSIG key of the rfc2136 cases (base64, as BIND's key blocks hold it).
const tsigSecret = "K2tf3TRjvQkVCmJF3/Z9vA4ixxrN0SSiuZLuzUwJZaPyT0WOnLXxOE1r5OFQmJjk2nZ8Mo1WbQzT7UqXW8VWXA=="

// conditionIs reports (as an error) whether obj, read again, has Ready with reason (True for
// UpToDate and AccountRegistered, else False) and, when stalled, Stalled True.
func conditionIs(ctx context.Context, obj client.Object, reason string, stalled bool) error {
	if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return err
	}
	var conditions []metav1.Condition
	switch o := obj.(type) {
	case *certpilotv1alpha1.Certificate:
		conditions = o.Status.Conditions
	case *certpilotv1alpha1.Issuer:
		conditions = o.Status.Conditions
	}
	want := metav1.ConditionFalse
	if reason == "UpToDate" || reason == "AccountRegistered" {
		want = metav1.ConditionTrue
	}
	ready := meta.FindStatusCondition(conditions, certpilotv1alpha1.ConditionReady)
	if ready == nil || ready.Status != want || ready.Reason != reason {
		return fmt.Errorf("want Ready %s %s, conditions %s", want, reason, describeConditions(conditions))
	}
	if stalled != meta.IsStatusConditionTrue(conditions, certpilotv1alpha1.ConditionStalled) {
		return fmt.Errorf("want Stalled=%v, conditions %s", stalled, describeConditions(conditions))
	}
	return nil
}

func describeConditions(conditions []metav1.Condition) string {
	var parts []string
	for _, c := range conditions {
		parts = append(parts, fmt.Sprintf("%s=%s %s (%.160s)", c.Type, c.Status, c.Reason, c.Message))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// checkWritesStayHome reads the audit log since from and fails on every write by the manager
// that the allowed rule of its namespace ("" for cluster-scoped objects) does not accept. A
// namespace without a rule (default, kube-system, another test's) may receive only Events and
// the status of Certificates.
func checkWritesStayHome(t *testing.T, from time.Time, allowed map[string]func(testenv.AuditEvent) bool) {
	t.Helper()
	if auditLog == "" {
		t.Fatal("no audit log: TestMain must start the apiserver with testenv.KubeOptions.AuditLogPath and set auditLog")
	}
	events, err := testenv.ReadAuditLog(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	writes := map[string]int{}
	var outside []string
	for _, e := range events {
		if e.Client() != "manager" || !e.IsWrite() || e.Received.Before(from) {
			continue
		}
		writes[e.Namespace]++
		rule, ok := allowed[e.Namespace]
		if !ok {
			// Another test's namespace: the manager watches every namespace and looks at the
			// Certificates earlier tests left there (their status). Anything else is a write
			// on behalf of one of this test's objects.
			rule = func(e testenv.AuditEvent) bool {
				return e.Resource == "events" || (e.Resource == "certificates" && e.Subresource == "status")
			}
		}
		if !rule(e) {
			outside = append(outside, fmt.Sprintf("%s %s %s/%s (%d)", e.Verb, e.ResourcePath(), e.Namespace, e.Name, e.Code))
		}
	}
	namespaces := make([]string, 0, len(writes))
	for namespace, n := range writes {
		namespaces = append(namespaces, fmt.Sprintf("%q: %d", namespace, n))
	}
	sort.Strings(namespaces)
	t.Logf("the manager's writes by namespace: %s", strings.Join(namespaces, ", "))
	if len(writes) == 0 {
		t.Error("no write by the manager in the audit log: is its user agent still \"manager/…\"?")
	}
	if len(outside) > 0 {
		t.Errorf("%d writes outside the namespace of the object that caused them:\n%s", len(outside), strings.Join(outside, "\n"))
	}
}

// edgeServesChallengesToACMEOnly dials the stack's edge for a name whose tls-alpn-01 challenge
// is published: with acme-tls/1 it gets the challenge certificate; without (no ALPN, or h2 and
// http/1.1, as browsers send) the handshake fails or serves an ordinary certificate, never the
// challenge certificate.
func edgeServesChallengesToACMEOnly(t *testing.T, s *testenv.Stack, name string) {
	t.Helper()
	address := fmt.Sprintf("127.0.0.1:%d", s.Pebble.TLSPort)
	isChallenge := func(leaf *x509.Certificate) bool {
		return slices.ContainsFunc(leaf.Extensions, func(e pkix.Extension) bool { return e.Id.String() == "1.3.6.1.5.5.7.1.31" })
	}
	testenv.Eventually(t, 30*time.Second, "the challenge served to acme-tls/1", func() error {
		conn, err := tls.Dial("tcp", address, &tls.Config{ServerName: name, NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true})
		if err != nil {
			return err
		}
		defer conn.Close()
		if leaf := conn.ConnectionState().PeerCertificates[0]; !isChallenge(leaf) {
			return fmt.Errorf("acme-tls/1 got a certificate without the acmeIdentifier extension")
		}
		return nil
	})
	for _, protocols := range [][]string{nil, {"h2", "http/1.1"}, {"http/1.1"}} {
		conn, err := tls.Dial("tcp", address, &tls.Config{ServerName: name, NextProtos: protocols, InsecureSkipVerify: true})
		if err != nil {
			continue // a handshake failure is a fine answer
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if isChallenge(leaf) {
			t.Errorf("the edge served the challenge certificate of %s to a client offering %v", name, protocols)
		}
	}
}

// unchanged fails when the Secret's resourceVersion moved since it was created.
func unchanged(t *testing.T, key client.ObjectKey) {
	t.Helper()
	secret := &corev1.Secret{}
	if err := kube.Client.Get(context.Background(), key, secret); err != nil {
		t.Fatal(err)
	}
	if secret.ResourceVersion != createdVersions[key] {
		t.Errorf("Secret %s was modified (resourceVersion %s, created as %s); managed fields %+v", key, secret.ResourceVersion, createdVersions[key], secret.ManagedFields)
	}
}

// createdVersions holds each Secret's resourceVersion as secret() objects were created.
var createdVersions = map[client.ObjectKey]string{}

func loadBalancer(namespace, name, probeAddresses string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	annotations := map[string]string{}
	if probeAddresses != "" {
		annotations[certpilotv1alpha1.AnnotationProbeAddresses] = probeAddresses
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "lb", Image: "lb:dev"}}},
			},
		},
	}
}

func issuer(namespace, name, server string, caBundle []byte, accountKey string) *certpilotv1alpha1.Issuer {
	return &certpilotv1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: certpilotv1alpha1.IssuerSpec{ACME: certpilotv1alpha1.ACMEIssuer{
			Server: server, Email: "ops@tenant.test", CABundle: caBundle,
			PrivateKeySecretRef: certpilotv1alpha1.SecretReference{Name: accountKey},
		}},
	}
}

func secret(namespace, name string, data map[string][]byte) client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Data: data}
}

// create creates obj and, for a Secret, records the resourceVersion it was created with.
func create(ctx context.Context, obj client.Object) error {
	if err := kube.Client.Create(ctx, obj); err != nil {
		return err
	}
	if _, ok := obj.(*corev1.Secret); ok {
		createdVersions[client.ObjectKeyFromObject(obj)] = obj.GetResourceVersion()
	}
	return nil
}

func pemKey(t *testing.T, kind string) []byte {
	t.Helper()
	var key any
	var err error
	switch kind {
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa1024":
		key, err = rsa.GenerateKey(rand.Reader, 1024)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func noise(t *testing.T, n int) []byte {
	t.Helper()
	raw := make([]byte, n*3/4)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(raw))[:n]
}
