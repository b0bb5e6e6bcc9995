package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// pebbleIssuerDomain is Pebble's default caaIdentities, the issuer-domain-names of its
// dns-persist-01 challenges.
const pebbleIssuerDomain = "pebble.letsencrypt.org"

// TestDNSPersist01: a wildcard and its apex with dns01 persist. The Certificate waits with the
// exact record in its status and the plugin prints it; the zone's owner adds it to BIND (not
// certpilot); the certificate is issued, and a forced renewal is issued again with no DNS
// change and no DNS write. A record naming another account, one lacking policy=wildcard and one
// past its persistuntil each give their own condition, before any order and with no validation
// at Pebble; a persistuntil before the next renewal is warned about.
func TestDNSPersist01(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	bind := testenv.StartBIND(t, "example.test")
	s := startStackWith(t, "e2e-persist", testenv.PebbleOptions{DNSServer: bind.Address})
	issuer := &certpilotv1alpha1.ClusterIssuer{}
	if err := kube.Client.Get(ctx, client.ObjectKey{Name: s.Issuer}, issuer); err != nil {
		t.Fatal(err)
	}
	account := issuer.Status.AccountURI
	persist := func(until *metav1.Time) *certpilotv1alpha1.Solver {
		return &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{
			Persist: &certpilotv1alpha1.PersistDNS01{PersistUntil: until}, Nameservers: []string{bind.Address},
		}}
	}

	cert := s.TLSALPN01Certificate("wildcard", "*.example.test", "example.test")
	cert.Spec.Solver = persist(nil)
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	record := "_validation-persist.example.test."
	want := pebbleIssuerDomain + "; accounturi=" + account + "; policy=wildcard"
	testenv.Eventually(t, time.Minute, "the records in status", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		reconciling := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
		if reconciling == nil || reconciling.Reason != "PersistRecordRequired" || !strings.Contains(reconciling.Message, record) {
			return fmt.Errorf("conditions %+v", cert.Status.Conditions)
		}
		if cert.Status.Order == nil || len(cert.Status.Order.Challenges) != 2 {
			return fmt.Errorf("order %+v", cert.Status.Order)
		}
		for _, challenge := range cert.Status.Order.Challenges {
			if challenge.Type != "dns-persist-01" || !strings.Contains(challenge.Reason, "TXT record "+record+" with the value "+strconv.Quote(want)) {
				return fmt.Errorf("challenge %+v does not name the record %s %q", challenge, record, want)
			}
		}
		return nil
	})
	if cert.Status.AutoRenewable == nil || !*cert.Status.AutoRenewable {
		t.Errorf("autoRenewable = %v, want true for dns01 persist", cert.Status.AutoRenewable)
	}
	waitForEvents(t, cert, 30*time.Second, "DNSPersistRecordRequired")
	out := runPlugin(t, s, "dns", cert.Name)
	if line := record + ` 3600 IN TXT "` + want + `"`; strings.Count(out, line) != 1 {
		t.Errorf("kubectl certpilot dns:\n%s\nwant the zone file line once:\n%s", out, line)
	}
	if n := s.Pebble.ValidationAttempts("example.test"); n != 0 {
		t.Errorf("Pebble attempted %d validations before the record existed", n)
	}

	// The zone's owner adds the record, once.
	if err := bind.AddTXT(record, want); err != nil {
		t.Fatal(err)
	}
	serial, err := bind.Serial(bind.Address)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	verifySecret(t, s.Pebble, cert)
	first, validated := cert.Status.SerialNumber, s.Pebble.ValidationAttempts("example.test")

	// A renewal needs nobody: no DNS change, no DNS write by certpilot, a new validation.
	patch := client.MergeFrom(cert.DeepCopy())
	cert.Annotations = map[string]string{certpilotv1alpha1.AnnotationRenew: "persist-1"}
	if err := kube.Client.Patch(ctx, cert, patch); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, first)
	verifySecret(t, s.Pebble, cert)
	if after, err := bind.Serial(bind.Address); err != nil || after != serial {
		t.Errorf("zone serial %d (%v) after the renewal, want %d: something wrote to the zone", after, err, serial)
	}
	if n := s.Pebble.ValidationAttempts("example.test"); n <= validated {
		t.Errorf("the renewal was not validated again (%d validations, %d before)", n, validated)
	}

	// Records that the CA would refuse: each its own reason, no order, no validation.
	ordersBefore := s.Pebble.OrderCount()
	expired := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	broken := map[string]struct {
		names  []string
		value  string
		reason string
	}{
		"wrong accounturi": {names: []string{"account.example.test"},
			value: pebbleIssuerDomain + "; accounturi=" + account + "0", reason: "PersistRecordAccountMismatch"},
		"no policy=wildcard": {names: []string{"*.policy.example.test", "policy.example.test"},
			value: pebbleIssuerDomain + "; accounturi=" + account, reason: "PersistRecordNoWildcardPolicy"},
		"expired persistuntil": {names: []string{"expired.example.test"},
			value: pebbleIssuerDomain + "; accounturi=" + account + "; persistuntil=" + expired, reason: "PersistRecordExpired"},
	}
	var certs []*certpilotv1alpha1.Certificate
	for desc, tc := range broken {
		base := strings.TrimPrefix(tc.names[0], "*.")
		if err := bind.AddTXT("_validation-persist."+base+".", tc.value); err != nil {
			t.Fatal(err)
		}
		c := s.TLSALPN01Certificate(strings.ReplaceAll(desc, " ", "-")[:7]+"-"+strings.Split(base, ".")[0], tc.names...)
		c.Spec.Solver = persist(nil)
		if err := kube.Client.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
		t.Run(desc, func(t *testing.T) {
			testenv.Eventually(t, time.Minute, tc.reason, func() error {
				if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
					return err
				}
				r := meta.FindStatusCondition(c.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
				if r == nil || r.Reason != tc.reason || !strings.Contains(r.Message, "_validation-persist."+base+". at "+bind.Address+" must be updated to the value") {
					return fmt.Errorf("conditions %+v", c.Status.Conditions)
				}
				return nil
			})
		})
	}
	// Let them be looked at again (counted by the manager's reconcile counter, not by a sleep;
	// records are rechecked every minute).
	retried := reconcileCount(t, s) + float64(len(certs))
	testenv.Eventually(t, 3*time.Minute, "broken certificates retried", func() error {
		if n := reconcileCount(t, s); n < retried {
			return fmt.Errorf("%v reconciles, waiting for %v", n, retried)
		}
		return nil
	})
	if orders := s.Pebble.OrderCount() - ordersBefore; orders != 0 {
		t.Errorf("Pebble saw %d orders for certificates whose records must be updated first", orders)
	}
	for _, tc := range broken {
		if n := s.Pebble.ValidationAttempts(strings.TrimPrefix(tc.names[0], "*.")); n != 0 {
			t.Errorf("Pebble attempted %d validations of %s", n, tc.names[0])
		}
	}

	// A persistuntil that passes before the next renewal: issued, and warned about.
	until := metav1.NewTime(time.Now().Add(24 * time.Hour).Truncate(time.Second))
	soon := s.TLSALPN01Certificate("soon", "soon.example.test")
	soon.Spec.Solver = persist(&until)
	value := pebbleIssuerDomain + "; accounturi=" + account + "; persistuntil=" + strconv.FormatInt(until.Unix(), 10)
	if err := bind.AddTXT("_validation-persist.soon.example.test.", value); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Create(ctx, soon); err != nil {
		t.Fatal(err)
	}
	waitReady(t, soon, 2*time.Minute, "")
	if !meta.IsStatusConditionTrue(soon.Status.Conditions, certpilotv1alpha1.ConditionPersistRecordExpiring) {
		t.Errorf("no PersistRecordExpiring condition: %+v", soon.Status.Conditions)
	}
	if out := runPlugin(t, s, "ls"); !strings.Contains(out, "true (record expiring)") {
		t.Errorf("kubectl certpilot ls does not mark the expiring record:\n%s", out)
	}
}

// TestDNS01AuthoritativeServersAndCNAME: with a primary and a secondary that lags, certpilot
// does not accept the challenge until both serve the TXT record; a CNAME at _acme-challenge is
// followed into the zone it delegates to, updated there, and the certificate issued. Pebble
// resolves through a recursive resolver, as a CA does.
func TestDNS01AuthoritativeServersAndCNAME(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	bind := testenv.StartBINDWith(t, testenv.BINDOptions{
		Zone: "lag.test", Secondary: true, Resolver: true,
		RefusedZoneRecords: []string{"_acme-challenge.www IN CNAME www.delegated.lag.test."},
	})
	s := startStackWith(t, "e2e-dns-auth", testenv.PebbleOptions{DNSServer: bind.ResolverAddress})
	if err := kube.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tsig", Namespace: s.Namespace},
		Data:       map[string][]byte{"secret": []byte(bind.TSIGSecret)},
	}); err != nil {
		t.Fatal(err)
	}
	rfc2136 := func(cname string) *certpilotv1alpha1.Solver {
		return &certpilotv1alpha1.Solver{DNS01: &certpilotv1alpha1.DNS01Solver{CNAMEStrategy: cname, RFC2136: &certpilotv1alpha1.RFC2136DNS01{
			Nameserver: bind.Address, TSIGKeyName: bind.TSIGKeyName, TSIGAlgorithm: "hmac-sha256", // as BIND writes it
			TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: "tsig", Key: "secret"},
		}}}
	}

	cert := s.TLSALPN01Certificate("lagging", "lag.test")
	cert.Spec.Solver = rfc2136("")
	if err := kube.Client.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "waiting for the secondary", func() error {
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		r := meta.FindStatusCondition(cert.Status.Conditions, certpilotv1alpha1.ConditionReconciling)
		if r == nil || r.Reason != "DNSRecordNotVisible" || !strings.Contains(r.Message, "is not visible at "+bind.SecondaryAddress+" (1 of the zone's 2") {
			return fmt.Errorf("conditions %+v", cert.Status.Conditions)
		}
		return nil
	})
	retried := reconcileCount(t, s) + 2
	testenv.Eventually(t, 2*time.Minute, "checked again while the secondary lags", func() error {
		if n := reconcileCount(t, s); n < retried {
			return fmt.Errorf("%v reconciles, waiting for %v", n, retried)
		}
		return nil
	})
	if n := s.Pebble.ValidationAttempts("lag.test"); n != 0 {
		t.Fatalf("Pebble attempted %d validations while the secondary lagged", n)
	}
	if err := bind.NotifySecondary(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cert, 2*time.Minute, "")
	verifySecret(t, s.Pebble, cert)

	// _acme-challenge.www.refused.lag.test (a zone that accepts no update) is a CNAME into
	// lag.test, which does.
	delegated := s.TLSALPN01Certificate("delegated", "www."+strings.TrimSuffix(bind.RefusedZone, "."))
	delegated.Spec.Solver = rfc2136(certpilotv1alpha1.CNAMEStrategyFollow)
	if err := kube.Client.Create(ctx, delegated); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, "the delegated certificate Ready", func() error {
		_ = bind.NotifySecondary() // the secondary serves the delegated zone too
		if err := kube.Client.Get(ctx, client.ObjectKeyFromObject(delegated), delegated); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(delegated.Status.Conditions, certpilotv1alpha1.ConditionReady) {
			return fmt.Errorf("conditions %+v", delegated.Status.Conditions)
		}
		return nil
	})
	verifySecret(t, s.Pebble, delegated)
	if !strings.Contains(s.Manager.Output(), "www.delegated.lag.test.") {
		t.Errorf("the manager did not update the CNAME's target www.delegated.lag.test.")
	}
	// The records go right after the status write that says Ready.
	testenv.Eventually(t, 30*time.Second, "the TXT records at the delegated name removed", func() error {
		if values, err := bind.TXT("www.delegated.lag.test."); err != nil || len(values) != 0 {
			return fmt.Errorf("TXT records left at the delegated name: %v (%v)", values, err)
		}
		return nil
	})
}

// runPlugin runs the built kubectl-certpilot against the stack, in its namespace.
func runPlugin(t *testing.T, s *testenv.Stack, args ...string) string {
	t.Helper()
	plugin := filepath.Join(t.TempDir(), "kubectl-certpilot")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := testenv.GoBuild(ctx, "./cmd/kubectl-certpilot", plugin); err != nil {
		t.Fatalf("building the plugin: %v", err)
	}
	out, err := exec.CommandContext(ctx, plugin, append([]string{"--kubeconfig", s.Kubeconfig, "-n", s.Namespace}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl certpilot %v: %v\n%s", args, err, out)
	}
	return string(out)
}
