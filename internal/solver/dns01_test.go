package solver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/dns01"
	"github.com/certpilot/certpilot/internal/outcome"
)

// testKeyAuthorization is a key authorization in RFC 8555's shape (token "." thumbprint);
// testKeyAuthorizationDigest is its dns-01 TXT value, computed apart from the code under test.
const (
	testKeyAuthorization       = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	testKeyAuthorizationDigest = "lCM7cZyQXcVHK2nnW3jjAhNT3Fvm18UN-kWZZknKoYM"
)

func TestDNS01Record(t *testing.T) {
	tests := map[string]struct {
		dnsName  string
		wantFQDN string
	}{
		"name": {dnsName: "www.example.test", wantFQDN: "_acme-challenge.www.example.test."},
		"a wildcard shares its base name's record": {dnsName: "*.example.test", wantFQDN: "_acme-challenge.example.test."},
		"a fully qualified name":                   {dnsName: "www.example.test.", wantFQDN: "_acme-challenge.www.example.test."},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fqdn, value := DNS01Record(tc.dnsName, testKeyAuthorization)
			if fqdn != tc.wantFQDN || value != testKeyAuthorizationDigest {
				t.Errorf("DNS01Record(%q) = %q, %q; want %q, %q", tc.dnsName, fqdn, value, tc.wantFQDN, testKeyAuthorizationDigest)
			}
		})
	}
}

// newRFC2136Solver returns an rfc2136 solver updating nameserver with the TSIG key in the
// Secret dns/tsig (key "secret"; no Secret when tsigSecret is nil), and the reader that counts
// its reads of the Secret.
func newRFC2136Solver(nameserver string, tsigSecret []byte, spec func(*certpilotv1alpha1.DNS01Solver)) (*rfc2136Solver, *countingReader) {
	builder := fake.NewClientBuilder()
	if tsigSecret != nil {
		builder.WithObjects(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "dns", Name: "tsig"}, Data: map[string][]byte{"secret": tsigSecret}})
	}
	api := &countingReader{Client: builder.Build()}
	dns01Spec := &certpilotv1alpha1.DNS01Solver{RFC2136: &certpilotv1alpha1.RFC2136DNS01{
		Nameserver:    nameserver,
		TSIGKeyName:   testTSIGKey,
		TSIGAlgorithm: "hmac-sha256",
		TSIGSecretRef: certpilotv1alpha1.SecretKeySelector{Name: "tsig", Key: "secret"},
	}}
	if spec != nil {
		spec(dns01Spec)
	}
	return &rfc2136Solver{
		deps:   &Deps{APIReader: api},
		owner:  Owner{Namespace: "team", Name: "web"},
		source: Source{SecretNamespace: "dns"},
		spec:   dns01Spec,
	}, api
}

func dns01Challenge(dnsName, keyAuthorization string) Challenge {
	return Challenge{DNSName: dnsName, Type: ChallengeDNS01, Token: "token-" + dnsName, KeyAuthorization: keyAuthorization}
}

// TestRFC2136Updater: the TSIG Secret is checked before an order is opened, and each problem
// stalls with a reason that names it.
func TestRFC2136Updater(t *testing.T) {
	tests := map[string]struct {
		secret     map[string][]byte // nil: no Secret
		wantReason string
	}{
		"no Secret":                         {wantReason: "MissingTSIGSecret"},
		"the Secret lacks the key":          {secret: map[string][]byte{"other": []byte(testTSIGSecret)}, wantReason: "InvalidTSIGSecret"},
		"the secret is not base64":          {secret: map[string][]byte{"secret": []byte("not base64!")}, wantReason: "InvalidTSIGSecret"},
		"the secret is blank":               {secret: map[string][]byte{"secret": []byte(" \n")}, wantReason: "InvalidTSIGSecret"},
		"a secret as tsig-keygen writes it": {secret: map[string][]byte{"secret": []byte(testTSIGSecret + "\n")}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			builder := fake.NewClientBuilder()
			if tc.secret != nil {
				builder.WithObjects(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "dns", Name: "tsig"}, Data: tc.secret})
			}
			s, _ := newRFC2136Solver("127.0.0.1:53", nil, nil)
			s.deps.APIReader = builder.Build()
			err := s.Prepare(context.Background())
			if tc.wantReason == "" {
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				updater, err := s.updater(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				want := dns01.RFC2136{Nameserver: "127.0.0.1:53", TSIGKeyName: testTSIGKey, TSIGAlgorithm: "hmac-sha256", TSIGSecret: testTSIGSecret}
				if *updater != want {
					t.Errorf("updater = %+v, want %+v", *updater, want)
				}
				return
			}
			stalled, ok := outcome.AsStalled(err)
			if !ok || stalled.Reason != tc.wantReason {
				t.Fatalf("Prepare = %v, want Stalled %s", err, tc.wantReason)
			}
			if !strings.Contains(stalled.Message, "tsig") || strings.Contains(stalled.Message, testTSIGSecret) {
				t.Errorf("message %q must name the Secret and never its value", stalled.Message)
			}
		})
	}
}

func TestRFC2136Resolvers(t *testing.T) {
	s, _ := newRFC2136Solver("10.0.0.1:53", nil, nil)
	if got := s.resolvers(); !slices.Equal(got, []string{"10.0.0.1:53"}) {
		t.Errorf("without nameservers: %v, want the RFC 2136 server", got)
	}
	s.spec.Nameservers = []string{"10.0.0.2:53", "10.0.0.3:53"}
	if got := s.resolvers(); !slices.Equal(got, s.spec.Nameservers) {
		t.Errorf("with nameservers: %v, want them", got)
	}
}

func TestUpdateError(t *testing.T) {
	tests := map[string]struct {
		err        error
		wantReason string
	}{
		"TSIG refused":   {err: fmt.Errorf("%w (BADSIG)", dns01.ErrTSIG), wantReason: "DNSUpdateUnauthorized"},
		"update refused": {err: fmt.Errorf("%w: REFUSED", dns01.ErrRefused), wantReason: "DNSUpdateRefused"},
		"no answer":      {err: fmt.Errorf("%w: i/o timeout", dns01.ErrUnreachable), wantReason: "DNSServerUnreachable"},
		"anything else":  {err: errors.New("SERVFAIL"), wantReason: "DNSUpdateFailed"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := updateError(&dns01.RFC2136{Nameserver: "ns.example.test:53"}, "_acme-challenge.example.test.", tc.err)
			wait, ok := outcome.AsWait(err)
			if !ok || wait.Reason != tc.wantReason || wait.After != dnsRetry {
				t.Fatalf("updateError = %#v, want Wait %s after %s", err, tc.wantReason, dnsRetry)
			}
			for _, part := range []string{"_acme-challenge.example.test.", "ns.example.test:53", tc.err.Error()} {
				if !strings.Contains(wait.Message, part) {
					t.Errorf("message %q lacks %q", wait.Message, part)
				}
			}
		})
	}
}

// TestRFC2136Solver presents, checks and cleans up dns-01 records on two in-process
// authoritative servers, the second one not updated until the test copies the record.
func TestRFC2136Solver(t *testing.T) {
	servers := startZoneServers(t, "127.0.0.1", "127.0.0.2")
	primary, secondary := servers[0], servers[1]
	s, api := newRFC2136Solver(primary.address, []byte(testTSIGSecret), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := dns01Challenge("example.test", testKeyAuthorization)
	wildcard := dns01Challenge("*.example.test", "other-token.thumbprint")
	fqdn, baseValue := DNS01Record(base.DNSName, base.KeyAuthorization)
	_, wildcardValue := DNS01Record(wildcard.DNSName, wildcard.KeyAuthorization)

	if err := s.Check(ctx, base); err == nil || !strings.Contains(err.Error(), "2 of the zone's 2") {
		t.Fatalf("Check before Present = %v, want the record missing at both nameservers", err)
	}
	if err := s.Present(ctx, []Challenge{base}); err != nil {
		t.Fatal(err)
	}
	if got := primary.txt(fqdn); !slices.Equal(got, []string{baseValue}) {
		t.Fatalf("TXT %s at the updated server = %v, want %q", fqdn, got, baseValue)
	}
	// Present is idempotent: a record already visible is not updated again.
	if err := s.Present(ctx, []Challenge{base}); err != nil {
		t.Fatal(err)
	}
	if primary.updateCount() != 1 {
		t.Errorf("updates after presenting twice = %d, want 1", primary.updateCount())
	}

	// Every authoritative nameserver must serve the record, not only the updated one.
	err := s.Check(ctx, base)
	if err == nil || !strings.Contains(err.Error(), secondary.address) || strings.Contains(err.Error(), primary.address) ||
		!strings.Contains(err.Error(), "1 of the zone's 2") {
		t.Fatalf("Check with the secondary behind = %v, want it to name %s only", err, secondary.address)
	}
	secondary.add(t, fmt.Sprintf("%s 60 IN TXT %q", fqdn, baseValue))
	if err := s.Check(ctx, base); err != nil {
		t.Fatalf("Check after the secondary caught up: %v", err)
	}

	// A wildcard and its base name share the record name: both values stay side by side.
	if err := s.Present(ctx, []Challenge{wildcard}); err != nil {
		t.Fatal(err)
	}
	if got := primary.txt(fqdn); len(got) != 2 || !slices.Contains(got, baseValue) || !slices.Contains(got, wildcardValue) {
		t.Fatalf("TXT %s = %v, want both values", fqdn, got)
	}

	// CleanUp removes its challenges' values only, and ignores challenges of other types and
	// challenges it cannot compute a value for.
	other := wildcard
	other.Type = ChallengeTLSALPN01
	noKey := base
	noKey.KeyAuthorization = ""
	if err := s.CleanUp(ctx, []Challenge{other, noKey}); err != nil {
		t.Fatal(err)
	}
	if got := primary.txt(fqdn); len(got) != 2 {
		t.Fatalf("TXT %s after cleaning up nothing of its own = %v, want both values", fqdn, got)
	}
	if err := s.CleanUp(ctx, []Challenge{base}); err != nil {
		t.Fatal(err)
	}
	if got := primary.txt(fqdn); !slices.Equal(got, []string{wildcardValue}) {
		t.Fatalf("TXT %s after cleaning up the base name = %v, want only the wildcard's %q", fqdn, got, wildcardValue)
	}
	if api.gets != 1 {
		t.Errorf("TSIG Secret read %d times across the steps, want once (remembered for %s)", api.gets, secretKeyTTL)
	}
}

// TestRFC2136RefusedKey: a key the server refuses is reported as unauthorized and forgotten, so
// a corrected Secret is used at the next attempt, not after secretKeyTTL.
func TestRFC2136RefusedKey(t *testing.T) {
	server := startZoneServers(t, "127.0.0.1")[0]
	s, api := newRFC2136Solver(server.address, []byte("d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldA=="), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	challenge := dns01Challenge("www.example.test", testKeyAuthorization)

	err := s.Present(ctx, []Challenge{challenge})
	if wait, ok := outcome.AsWait(err); !ok || wait.Reason != "DNSUpdateUnauthorized" {
		t.Fatalf("Present with a wrong key = %v, want Wait DNSUpdateUnauthorized", err)
	}
	secret := &corev1.Secret{}
	if err := api.Get(ctx, client.ObjectKey{Namespace: "dns", Name: "tsig"}, secret); err != nil {
		t.Fatal(err)
	}
	secret.Data["secret"] = []byte(testTSIGSecret)
	if err := api.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	api.gets = 0
	if err := s.Present(ctx, []Challenge{challenge}); err != nil {
		t.Fatalf("Present after the Secret was corrected: %v", err)
	}
	if api.gets != 1 {
		t.Errorf("TSIG Secret reads after the refusal = %d, want 1 (the refused key forgotten)", api.gets)
	}
	fqdn, value := DNS01Record(challenge.DNSName, challenge.KeyAuthorization)
	if got := server.txt(fqdn); !slices.Equal(got, []string{value}) {
		t.Errorf("TXT %s = %v, want %q", fqdn, got, value)
	}
}

// TestRFC2136ZoneNotServed: a name outside the server's zones is a refused update, said so.
func TestRFC2136ZoneNotServed(t *testing.T) {
	server := startZoneServers(t, "127.0.0.1")[0]
	s, _ := newRFC2136Solver(server.address, []byte(testTSIGSecret), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.Present(ctx, []Challenge{dns01Challenge("www.other.test", testKeyAuthorization)})
	if wait, ok := outcome.AsWait(err); !ok || wait.Reason != "DNSUpdateRefused" {
		t.Fatalf("Present outside the zone = %v, want Wait DNSUpdateRefused", err)
	}
	if server.updateCount() != 0 {
		t.Errorf("updates = %d, want 0", server.updateCount())
	}
}

// TestRFC2136CNAMEStrategy: with Follow the record goes to the CNAME's target (where validators
// look), with None to the challenge name itself.
func TestRFC2136CNAMEStrategy(t *testing.T) {
	const target = "_acme-challenge.delegated.example.test."
	tests := map[string]struct {
		strategy string
		wantAt   string
	}{
		"Follow": {strategy: certpilotv1alpha1.CNAMEStrategyFollow, wantAt: target},
		"None":   {strategy: certpilotv1alpha1.CNAMEStrategyNone, wantAt: "_acme-challenge.www.example.test."},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			server := startZoneServers(t, "127.0.0.1")[0]
			server.add(t, "_acme-challenge.www.example.test. 60 IN CNAME "+target)
			s, _ := newRFC2136Solver(server.address, []byte(testTSIGSecret), func(spec *certpilotv1alpha1.DNS01Solver) {
				spec.CNAMEStrategy = tc.strategy
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			challenge := dns01Challenge("www.example.test", testKeyAuthorization)
			if err := s.Present(ctx, []Challenge{challenge}); err != nil {
				t.Fatal(err)
			}
			if got := server.txt(tc.wantAt); !slices.Equal(got, []string{testKeyAuthorizationDigest}) {
				t.Fatalf("TXT %s = %v, want %q", tc.wantAt, got, testKeyAuthorizationDigest)
			}
			if err := s.Check(ctx, challenge); err != nil {
				t.Errorf("Check: %v", err)
			}
			if err := s.CleanUp(ctx, []Challenge{challenge}); err != nil {
				t.Fatal(err)
			}
			if got := server.txt(tc.wantAt); len(got) != 0 {
				t.Errorf("TXT %s after CleanUp = %v, want none", tc.wantAt, got)
			}
		})
	}
}

// TestManualSolver: a person is told once per challenge which record to create, and the check
// waits until the record is visible.
func TestManualSolver(t *testing.T) {
	server := startZoneServers(t, "127.0.0.1")[0]
	recorder := events.NewFakeRecorder(10)
	certificate := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web"}}
	now := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	s := &manualSolver{
		deps:  &Deps{Recorder: recorder, Clock: clocktesting.NewFakePassiveClock(now)},
		owner: Owner{Object: certificate, Namespace: "team", Name: "web"},
		spec:  &certpilotv1alpha1.DNS01Solver{Manual: &certpilotv1alpha1.ManualDNS01{}, Nameservers: []string{server.address}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A tlsserver or shortlived order at Let's Encrypt: the authorization expires in an hour.
	challenge := dns01Challenge("www.example.test", testKeyAuthorization)
	challenge.Expires = now.Add(59*time.Minute + 30*time.Second)
	const deadline = "before 2026-12-06T20:59:30Z (in 59m)"
	announced := dns01Challenge("api.example.test", "announced.thumbprint")
	announced.Announced = true

	if err := s.Present(ctx, []Challenge{challenge, announced}); err != nil {
		t.Fatal(err)
	}
	if got := drainEvents(recorder); len(got) != 1 ||
		!strings.Contains(got[0], "DNSRecordRequired") || !strings.Contains(got[0], "_acme-challenge.www.example.test.") ||
		!strings.Contains(got[0], testKeyAuthorizationDigest) || !strings.Contains(got[0], deadline) {
		t.Fatalf("events = %q, want one DNSRecordRequired naming the record, its value and %q", got, deadline)
	}

	err := s.Check(ctx, challenge)
	if err == nil || !strings.Contains(err.Error(), server.address) || !strings.Contains(err.Error(), testKeyAuthorizationDigest) ||
		!strings.Contains(err.Error(), deadline) {
		t.Fatalf("Check before the record exists = %v, want it to name the value, the nameserver and %q", err, deadline)
	}
	reason, message := s.NotVisible([]string{err.Error()}, 2)
	if reason != "DNSRecordRequired" || !strings.Contains(message, "1 of 2") || !strings.Contains(message, deadline) {
		t.Errorf("NotVisible = %q, %q", reason, message)
	}
	// Without an expiry from the CA nothing is made up; past it, the message says so.
	noExpiry := challenge
	noExpiry.Expires = time.Time{}
	if err := s.Check(ctx, noExpiry); err == nil || strings.Contains(err.Error(), "expires") {
		t.Errorf("Check without an expiry = %v", err)
	}
	expired := challenge
	expired.Expires = now.Add(-time.Minute)
	if err := s.Check(ctx, expired); err == nil || !strings.Contains(err.Error(), "already past") {
		t.Errorf("Check after the expiry = %v, want it to say it is past", err)
	}
	server.add(t, fmt.Sprintf("_acme-challenge.www.example.test. 60 IN TXT %q", testKeyAuthorizationDigest))
	if err := s.Check(ctx, challenge); err != nil {
		t.Errorf("Check after the person created the record: %v", err)
	}
	if s.AutoRenewable() {
		t.Error("a manual solver must not be auto-renewable")
	}
}

func drainEvents(recorder *events.FakeRecorder) []string {
	var got []string
	for {
		select {
		case event := <-recorder.Events:
			got = append(got, event)
		default:
			return got
		}
	}
}
