package solver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/dns01"
	"github.com/certpilot/certpilot/internal/outcome"
)

const (
	testIssuerDomain = "ca.example.test"
	testAccountURI   = "https://ca.example.test/acme/acct/1"
)

var persistOwners atomic.Int32

// persistFixture is a dns01 persist solver asking in-process nameservers, for a Certificate
// of its own (its metric series are dropped when the test ends).
type persistFixture struct {
	solver      *persistSolver
	certificate *certpilotv1alpha1.Certificate
	recorder    *events.FakeRecorder
	servers     []*zoneServer
	now         time.Time
}

func newPersistFixture(t *testing.T, names []string, hosts ...string) *persistFixture {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	f := &persistFixture{servers: startZoneServers(t, hosts...), recorder: events.NewFakeRecorder(10),
		now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	name := fmt.Sprintf("persist-%d", persistOwners.Add(1))
	f.certificate = &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, Generation: 3}}
	t.Cleanup(func() { ForgetMetrics("team", name) })
	var nameservers []string
	for _, s := range f.servers {
		nameservers = append(nameservers, s.address)
	}
	deps := &Deps{Recorder: f.recorder, Clock: clocktesting.NewFakePassiveClock(f.now)}
	f.solver = newPersistSolver(deps, Owner{Object: f.certificate, Namespace: "team", Name: name},
		Source{Names: names, Account: func(context.Context) (string, []string, error) {
			return testAccountURI, []string{testIssuerDomain}, nil
		}},
		&certpilotv1alpha1.DNS01Solver{Persist: &certpilotv1alpha1.PersistDNS01{}, Nameservers: nameservers})
	return f
}

// record puts a dns-persist-01 record for dnsName into every server.
func (f *persistFixture) record(t *testing.T, dnsName, value string) {
	t.Helper()
	for _, s := range f.servers {
		s.add(t, fmt.Sprintf("%s 60 IN TXT %q", dns01.PersistRecordName(dnsName), value))
	}
}

func persistChallenge(dnsName string) Challenge {
	return Challenge{DNSName: dnsName, Type: ChallengeDNSPersist01, Token: "tok",
		IssuerDomainNames: []string{testIssuerDomain}, AccountURI: testAccountURI}
}

// gauge returns the value of the series of vec with labels, and whether it exists.
func gauge(t *testing.T, vec *prometheus.GaugeVec, labels prometheus.Labels) (float64, bool) {
	t.Helper()
	metrics := make(chan prometheus.Metric, 1000)
	vec.Collect(metrics)
	close(metrics)
	for metric := range metrics {
		var m dto.Metric
		if err := metric.Write(&m); err != nil {
			t.Fatal(err)
		}
		matched := 0
		for _, pair := range m.GetLabel() {
			if value, ok := labels[pair.GetName()]; ok && value == pair.GetValue() {
				matched++
			}
		}
		if matched == len(labels) {
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestPersistRecordFor(t *testing.T) {
	until := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		spec     *certpilotv1alpha1.PersistDNS01
		wildcard bool
		want     string
	}{
		"no spec": {want: "ca.example.test; accounturi=" + testAccountURI},
		"wildcard": {spec: &certpilotv1alpha1.PersistDNS01{}, wildcard: true,
			want: "ca.example.test; accounturi=" + testAccountURI + "; policy=wildcard"},
		"persistUntil": {spec: &certpilotv1alpha1.PersistDNS01{PersistUntil: &metav1.Time{Time: until}},
			want: fmt.Sprintf("ca.example.test; accounturi=%s; persistuntil=%d", testAccountURI, until.Unix())},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := PersistRecordFor(tc.spec, testIssuerDomain, testAccountURI, tc.wildcard).Value(); got != tc.want {
				t.Errorf("record = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPersistRecordNames: one record per name, with policy=wildcard when the wildcard of the
// name is validated too (the two share the record).
func TestPersistRecordNames(t *testing.T) {
	tests := map[string]struct {
		names         []string
		wantRecords   []string
		wantWildcards []string // names whose record must carry policy=wildcard
	}{
		"one name":                    {names: []string{"www.example.test"}, wantRecords: []string{"www.example.test"}},
		"a wildcard":                  {names: []string{"*.example.test"}, wantRecords: []string{"*.example.test"}, wantWildcards: []string{"*.example.test"}},
		"a name and its wildcard":     {names: []string{"example.test", "*.example.test"}, wantRecords: []string{"*.example.test"}, wantWildcards: []string{"example.test", "*.example.test"}},
		"a wildcard and its base":     {names: []string{"*.example.test", "example.test"}, wantRecords: []string{"*.example.test"}, wantWildcards: []string{"example.test", "*.example.test"}},
		"two names":                   {names: []string{"a.example.test", "b.example.test"}, wantRecords: []string{"a.example.test", "b.example.test"}},
		"a wildcard of another level": {names: []string{"www.example.test", "*.www.example.test", "api.example.test"}, wantRecords: []string{"*.www.example.test", "api.example.test"}, wantWildcards: []string{"www.example.test", "*.www.example.test"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newPersistSolver(&Deps{}, Owner{}, Source{Names: tc.names}, &certpilotv1alpha1.DNS01Solver{})
			if got := s.recordNames(); !slices.Equal(got, tc.wantRecords) {
				t.Errorf("recordNames = %v, want %v", got, tc.wantRecords)
			}
			for _, dnsName := range tc.names {
				if got, want := s.wildcard(dnsName), slices.Contains(tc.wantWildcards, dnsName); got != want {
					t.Errorf("wildcard(%q) = %v, want %v", dnsName, got, want)
				}
			}
		})
	}
}

// TestPersistNextRenewal: the next renewal is as far from now as the current certificate's
// renewal was from its issuance, else 60 days.
func TestPersistNextRenewal(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	issued := now.Add(-time.Hour)
	tests := map[string]struct {
		owner Owner
		want  time.Time
	}{
		"no certificate yet": {owner: Owner{Object: &certpilotv1alpha1.Certificate{}}, want: now.Add(defaultRenewalCycle)},
		"a certificate renewed 4 days after issuance": {owner: Owner{Object: &certpilotv1alpha1.Certificate{Status: certpilotv1alpha1.CertificateStatus{
			NotBefore: &metav1.Time{Time: issued}, RenewalTime: &metav1.Time{Time: issued.Add(96 * time.Hour)},
		}}}, want: now.Add(96 * time.Hour)},
		"a renewal time before issuance": {owner: Owner{Object: &certpilotv1alpha1.Certificate{Status: certpilotv1alpha1.CertificateStatus{
			NotBefore: &metav1.Time{Time: issued}, RenewalTime: &metav1.Time{Time: issued.Add(-time.Minute)},
		}}}, want: now.Add(defaultRenewalCycle)},
		"no owner object": {want: now.Add(defaultRenewalCycle)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newPersistSolver(&Deps{Clock: clocktesting.NewFakePassiveClock(now)}, tc.owner, Source{}, &certpilotv1alpha1.DNS01Solver{})
			if got := s.nextRenewal(); !got.Equal(tc.want) {
				t.Errorf("nextRenewal = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestPersistCheck reads the record read-only, as the CA would, and names the precise problem.
func TestPersistCheck(t *testing.T) {
	tests := map[string]struct {
		record      string // "" for none
		challenge   func(Challenge) Challenge
		wantReason  string // "" when the check passes
		wantMessage string
	}{
		"accepted": {record: "ca.example.test; accounturi=" + testAccountURI},
		"missing": {wantReason: string(dns01.PersistMissing),
			wantMessage: `is not visible at 127.0.0.1:`},
		"another account": {record: "ca.example.test; accounturi=https://ca.example.test/acme/acct/2",
			wantReason: string(dns01.PersistWrongAccount), wantMessage: `must be updated to the value "ca.example.test; accounturi=` + testAccountURI + `"`},
		"another CA's record only": {record: "other-ca.test; accounturi=" + testAccountURI,
			wantReason: string(dns01.PersistMissing), wantMessage: "is not visible"},
		"the CA names no issuer domain": {challenge: func(c Challenge) Challenge { c.IssuerDomainNames = nil; return c },
			wantReason: reasonPersistNoIssuerDomain, wantMessage: "names no issuer domain"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newPersistFixture(t, []string{"www.example.test"})
			if tc.record != "" {
				f.record(t, "www.example.test", tc.record)
			}
			challenge := persistChallenge("www.example.test")
			if tc.challenge != nil {
				challenge = tc.challenge(challenge)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := f.solver.Check(ctx, challenge)
			if tc.wantReason == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantMessage) {
				t.Fatalf("Check = %v, want an error containing %q", err, tc.wantMessage)
			}
			reason, message := f.solver.NotVisible([]string{err.Error()}, 1)
			if reason != tc.wantReason || !strings.Contains(message, err.Error()) {
				t.Errorf("NotVisible = %q, %q; want reason %s", reason, message, tc.wantReason)
			}
		})
	}
}

// TestPersistCheckEveryNameserver: a record one authoritative server lacks fails the check,
// since the CA may ask that one.
func TestPersistCheckEveryNameserver(t *testing.T) {
	f := newPersistFixture(t, []string{"www.example.test"}, "127.0.0.1", "127.0.0.2")
	f.servers[0].add(t, fmt.Sprintf("%s 60 IN TXT %q", dns01.PersistRecordName("www.example.test"), "ca.example.test; accounturi="+testAccountURI))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.solver.Check(ctx, persistChallenge("www.example.test")); err == nil {
		t.Fatal("Check passed with the record at one of two nameservers")
	}
	f.record(t, "www.example.test", "ca.example.test; accounturi="+testAccountURI)
	if err := f.solver.Check(ctx, persistChallenge("www.example.test")); err != nil {
		t.Fatalf("Check with the record at both: %v", err)
	}
}

func TestPersistCheckWithoutAccount(t *testing.T) {
	f := newPersistFixture(t, []string{"www.example.test"})
	challenge := persistChallenge("www.example.test")
	challenge.AccountURI = ""
	if err := f.solver.Check(context.Background(), challenge); err == nil || !strings.Contains(err.Error(), "account URL") {
		t.Errorf("Check without the account URL = %v, want an error saying so", err)
	}
}

// TestPersistPrepare: before an order, a record that exists but would be refused holds the
// order back with the record to set; a missing record does not (the challenges say it); a
// record whose persistuntil passes before the next renewal is flagged.
func TestPersistPrepare(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	record := "ca.example.test; accounturi=" + testAccountURI
	soon, later := now.Add(10*24*time.Hour), now.Add(90*24*time.Hour)
	tests := map[string]struct {
		records      map[string]string // dnsName -> record
		names        []string
		wantReason   string // a Wait's reason; "" when Prepare passes
		wantExpiring bool
		wantUntil    time.Time // the persistuntil metric; zero for no series
	}{
		"accepted": {records: map[string]string{"www.example.test": record}},
		"missing":  {},
		"another account": {records: map[string]string{"www.example.test": "ca.example.test; accounturi=https://ca.example.test/acme/acct/2"},
			wantReason: string(dns01.PersistWrongAccount)},
		"expired": {records: map[string]string{"www.example.test": fmt.Sprintf("%s; persistuntil=%d", record, now.Add(-time.Hour).Unix())},
			wantReason: string(dns01.PersistExpired)},
		"a wildcard without policy=wildcard": {names: []string{"www.example.test", "*.www.example.test"},
			records: map[string]string{"www.example.test": record}, wantReason: string(dns01.PersistNoWildcardPolicy)},
		"persistuntil after the next renewal": {records: map[string]string{"www.example.test": fmt.Sprintf("%s; persistuntil=%d", record, later.Unix())},
			wantUntil: later},
		"persistuntil before the next renewal": {records: map[string]string{"www.example.test": fmt.Sprintf("%s; persistuntil=%d", record, soon.Unix())},
			wantUntil: soon, wantExpiring: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			names := tc.names
			if names == nil {
				names = []string{"www.example.test"}
			}
			f := newPersistFixture(t, names)
			for dnsName, value := range tc.records {
				f.record(t, dnsName, value)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := f.solver.Prepare(ctx)
			if tc.wantReason == "" && err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if tc.wantReason != "" {
				wait, ok := outcome.AsWait(err)
				if !ok || wait.Reason != tc.wantReason || wait.After != persistRecheck ||
					!strings.Contains(wait.Message, dns01.PersistRecordName("www.example.test")) {
					t.Fatalf("Prepare = %v, want Wait %s naming the record", err, tc.wantReason)
				}
			}
			owner := prometheus.Labels{"namespace": "team", "name": f.certificate.Name}
			condition := meta.FindStatusCondition(f.certificate.Status.Conditions, certpilotv1alpha1.ConditionPersistRecordExpiring)
			expiring, _ := gauge(t, persistExpiring, owner)
			if tc.wantExpiring != (condition != nil) || tc.wantExpiring != (expiring == 1) {
				t.Errorf("condition %s = %+v, metric %v; want expiring %v", certpilotv1alpha1.ConditionPersistRecordExpiring, condition, expiring, tc.wantExpiring)
			}
			if condition != nil && (condition.Status != metav1.ConditionTrue || condition.ObservedGeneration != 3 ||
				!strings.Contains(condition.Message, soon.Format(time.RFC3339))) {
				t.Errorf("condition %+v: want True, generation 3, naming the persistuntil", condition)
			}
			owner["record"] = dns01.PersistRecordName("www.example.test")
			until, ok := gauge(t, persistUntil, owner)
			if tc.wantUntil.IsZero() != !ok || ok && until != float64(tc.wantUntil.Unix()) {
				t.Errorf("persistuntil metric = %v (exists %v), want %v", until, ok, tc.wantUntil)
			}
		})
	}
}

// TestPersistPrepareClearsExpiring: once the record's persistuntil is extended (here removed),
// the condition goes and the metrics say so.
func TestPersistPrepareClearsExpiring(t *testing.T) {
	f := newPersistFixture(t, []string{"www.example.test"})
	record := "ca.example.test; accounturi=" + testAccountURI
	f.record(t, "www.example.test", fmt.Sprintf("%s; persistuntil=%d", record, f.now.Add(24*time.Hour).Unix()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.solver.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(f.certificate.Status.Conditions, certpilotv1alpha1.ConditionPersistRecordExpiring) {
		t.Fatal("no PersistRecordExpiring condition for a record expiring tomorrow")
	}
	f.servers[0].remove(dns01.PersistRecordName("www.example.test"))
	f.record(t, "www.example.test", record)
	if err := f.solver.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if meta.FindStatusCondition(f.certificate.Status.Conditions, certpilotv1alpha1.ConditionPersistRecordExpiring) != nil {
		t.Error("PersistRecordExpiring stayed after the record no longer expires")
	}
	owner := prometheus.Labels{"namespace": "team", "name": f.certificate.Name}
	if value, _ := gauge(t, persistExpiring, owner); value != 0 {
		t.Errorf("expiring metric = %v, want 0", value)
	}
	owner["record"] = dns01.PersistRecordName("www.example.test")
	if _, ok := gauge(t, persistUntil, owner); ok {
		t.Error("persistuntil metric stayed for a record without persistuntil")
	}
}

// TestPersistPrepareAccount: without the issuer's account at hand nothing is looked up (the
// order's challenges name what is needed); a failing account lookup is returned.
func TestPersistPrepareAccount(t *testing.T) {
	f := newPersistFixture(t, []string{"www.example.test"})
	f.record(t, "www.example.test", "ca.example.test; accounturi=https://ca.example.test/acme/acct/2") // refused if looked at
	ctx := context.Background()
	for name, account := range map[string]func(context.Context) (string, []string, error){
		"no account function":   nil,
		"no account yet":        func(context.Context) (string, []string, error) { return "", []string{testIssuerDomain}, nil },
		"no issuer domain name": func(context.Context) (string, []string, error) { return testAccountURI, nil, nil },
	} {
		f.solver.source.Account = account
		if err := f.solver.Prepare(ctx); err != nil {
			t.Errorf("%s: Prepare = %v, want nil (nothing to check yet)", name, err)
		}
	}
	failure := errors.New("the CA's directory is unreachable")
	f.solver.source.Account = func(context.Context) (string, []string, error) { return "", nil, failure }
	if err := f.solver.Prepare(ctx); !errors.Is(err, failure) {
		t.Errorf("Prepare = %v, want the account lookup's error", err)
	}
}

// TestPersistPresent tells the zone's owner once which record to set, only when it is not set.
func TestPersistPresent(t *testing.T) {
	f := newPersistFixture(t, []string{"www.example.test", "api.example.test"})
	f.record(t, "api.example.test", "ca.example.test; accounturi="+testAccountURI)
	announced := persistChallenge("mail.example.test")
	announced.Announced = true
	noIssuer := persistChallenge("ftp.example.test")
	noIssuer.IssuerDomainNames = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.solver.Present(ctx, []Challenge{persistChallenge("www.example.test"), persistChallenge("api.example.test"), announced, noIssuer}); err != nil {
		t.Fatal(err)
	}
	got := drainEvents(f.recorder)
	want := dns01.ZoneFileLine(dns01.PersistRecordName("www.example.test"), "ca.example.test; accounturi="+testAccountURI, dns01.PersistTTL)
	if len(got) != 1 || !strings.Contains(got[0], "DNSPersistRecordRequired") || !strings.Contains(got[0], want) {
		t.Fatalf("events = %q, want one DNSPersistRecordRequired with %q", got, want)
	}
}

// TestPersistCleanUp writes nothing; a deleted Certificate's metric series go.
func TestPersistCleanUp(t *testing.T) {
	f := newPersistFixture(t, []string{"www.example.test"})
	f.record(t, "www.example.test", fmt.Sprintf("ca.example.test; accounturi=%s; persistuntil=%d", testAccountURI, f.now.Add(24*time.Hour).Unix()))
	if err := f.solver.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	owner := prometheus.Labels{"namespace": "team", "name": f.certificate.Name}
	if err := f.solver.CleanUp(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := gauge(t, persistExpiring, owner); !ok {
		t.Fatal("CleanUp of a live Certificate dropped its metrics")
	}
	f.certificate.DeletionTimestamp = &metav1.Time{Time: f.now}
	if err := f.solver.CleanUp(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := gauge(t, persistExpiring, owner); ok {
		t.Error("CleanUp of a deleted Certificate kept its expiring metric")
	}
	owner["record"] = dns01.PersistRecordName("www.example.test")
	if _, ok := gauge(t, persistUntil, owner); ok {
		t.Error("CleanUp of a deleted Certificate kept its persistuntil metric")
	}
}
