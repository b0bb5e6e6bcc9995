package solver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/outcome"
	"github.com/certpilot/certpilot/internal/pki"
)

// testScheme knows the built-in kinds and certpilot's (built once: a scheme is safe to share).
func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme, err := sharedScheme()
	if err != nil {
		t.Fatal(err)
	}
	return scheme
}

var sharedScheme = sync.OnceValues(func() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return scheme, certpilotv1alpha1.AddToScheme(scheme)
})

func loadBalancerDeployment(namespace string, annotations map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "lb", Annotations: annotations}}
}

func TestListed(t *testing.T) {
	tests := map[string]struct {
		annotation, value string
		want              bool
	}{
		"empty annotation":         {annotation: "", value: "team", want: false},
		"listed alone":             {annotation: "team", value: "team", want: true},
		"listed among others":      {annotation: "ops, team ,dev", value: "team", want: true},
		"a prefix is not the name": {annotation: "team-a,teams", value: "team", want: false},
		"star lists every value":   {annotation: "ops,*", value: "team", want: true},
		"case matters":             {annotation: "Team", value: "team", want: false},
		"an address":               {annotation: "10.0.0.1:443,10.0.0.2:443", value: "10.0.0.2:443", want: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := listed(tc.annotation, tc.value); got != tc.want {
				t.Errorf("listed(%q, %q) = %v, want %v", tc.annotation, tc.value, got, tc.want)
			}
		})
	}
}

func TestLoadBalancerNameAndKeys(t *testing.T) {
	s := newLoadBalancer(&Deps{}, Owner{Namespace: "team", Name: "web"}, Source{DefaultNamespace: "issuer-ns"}, ChallengeTLSALPN01,
		certpilotv1alpha1.LoadBalancerRef{Name: "lb"}, "")
	if got, want := s.loadBalancer(), (types.NamespacedName{Namespace: "issuer-ns", Name: "lb"}); got != want {
		t.Errorf("load balancer without a namespace = %s, want the source's default %s", got, want)
	}
	s.ref.Namespace = "edge"
	if got, want := s.loadBalancer(), (types.NamespacedName{Namespace: "edge", Name: "lb"}); got != want {
		t.Errorf("load balancer = %s, want %s", got, want)
	}
	challenge := Challenge{DNSName: "WWW.example.test", Token: "tok"}
	if got, want := s.key(challenge), certpilotv1alpha1.TLSALPN01Key("www.example.test"); got != want {
		t.Errorf("tls-alpn-01 key = %q, want %q (by name)", got, want)
	}
	s.typ = ChallengeHTTP01
	if got, want := s.key(challenge), certpilotv1alpha1.HTTP01Key("tok"); got != want {
		t.Errorf("http-01 key = %q, want %q (by token)", got, want)
	}
}

// TestLoadBalancerPrepare: the tenant boundary and the probe address allow-list, checked from
// the Deployment's metadata before anything is written.
func TestLoadBalancerPrepare(t *testing.T) {
	tests := map[string]struct {
		lbNamespace   string // the Deployment's namespace; "" when it does not exist
		annotations   map[string]string
		clusterIssuer bool
		probeAddress  string
		wantStalled   string
		wantWait      string
	}{
		"own namespace": {lbNamespace: "team"},
		"another namespace, not allowed": {
			lbNamespace: "edge", wantStalled: "LoadBalancerNotAllowed",
		},
		"another namespace that lists this one": {
			lbNamespace: "edge", annotations: map[string]string{certpilotv1alpha1.AnnotationAllowedNamespaces: "ops,team"},
		},
		"another namespace that allows every namespace": {
			lbNamespace: "edge", annotations: map[string]string{certpilotv1alpha1.AnnotationAllowedNamespaces: "*"},
		},
		"another namespace, a ClusterIssuer's solver": {lbNamespace: "edge", clusterIssuer: true},
		"a probe address not listed": {
			lbNamespace: "team", probeAddress: "10.0.0.1:443", wantStalled: "ProbeAddressNotAllowed",
			annotations: map[string]string{certpilotv1alpha1.AnnotationProbeAddresses: "10.0.0.2:443"},
		},
		"a probe address listed": {
			lbNamespace: "team", probeAddress: "10.0.0.1:443",
			annotations: map[string]string{certpilotv1alpha1.AnnotationProbeAddresses: "10.0.0.2:443, 10.0.0.1:443"},
		},
		"a probe address set by a ClusterIssuer": {lbNamespace: "team", probeAddress: "10.0.0.1:443", clusterIssuer: true},
		"no Deployment":                          {wantWait: "LoadBalancerNotFound"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			builder := fake.NewClientBuilder().WithScheme(testScheme(t))
			namespace := tc.lbNamespace
			if namespace != "" {
				builder.WithObjects(loadBalancerDeployment(namespace, tc.annotations))
			} else {
				namespace = "team"
			}
			c := builder.Build()
			s := newLoadBalancer(&Deps{Client: c, APIReader: c}, Owner{Namespace: "team", Name: "web"},
				Source{ClusterIssuer: tc.clusterIssuer, DefaultNamespace: "team"}, ChallengeTLSALPN01,
				certpilotv1alpha1.LoadBalancerRef{Namespace: namespace, Name: "lb"}, tc.probeAddress)
			err := s.Prepare(context.Background())
			switch {
			case tc.wantStalled != "":
				if stalled, ok := outcome.AsStalled(err); !ok || stalled.Reason != tc.wantStalled {
					t.Fatalf("Prepare = %v, want Stalled %s", err, tc.wantStalled)
				}
			case tc.wantWait != "":
				if wait, ok := outcome.AsWait(err); !ok || wait.Reason != tc.wantWait {
					t.Fatalf("Prepare = %v, want Wait %s", err, tc.wantWait)
				}
			case err != nil:
				t.Fatalf("Prepare: %v", err)
			}
		})
	}
}

// TestLoadBalancerDeploymentFromAPI: a Deployment the cache cannot serve (its namespace is not
// watched) is read from the API instead.
func TestLoadBalancerDeploymentFromAPI(t *testing.T) {
	scheme := testScheme(t)
	cache := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return errors.New(`unable to get: edge/lb because of unknown namespace for the cache`)
		},
	}).Build()
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(loadBalancerDeployment("edge", map[string]string{
		certpilotv1alpha1.AnnotationAllowedNamespaces: "team",
	})).Build()
	s := newLoadBalancer(&Deps{Client: cache, APIReader: api}, Owner{Namespace: "team", Name: "web"}, Source{}, ChallengeHTTP01,
		certpilotv1alpha1.LoadBalancerRef{Namespace: "edge", Name: "lb"}, "")
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatalf("Prepare with the Deployment only in the API: %v", err)
	}
}

// TestLoadBalancerSatisfied: a stored tls-alpn-01 certificate answers a challenge while it
// names the domain, proves the key authorization and has more than 10 minutes left; http-01
// values are compared as bytes by the shard writer (no function).
func TestLoadBalancerSatisfied(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakePassiveClock(now)
	s := newLoadBalancer(&Deps{Clock: clock}, Owner{}, Source{}, ChallengeTLSALPN01, certpilotv1alpha1.LoadBalancerRef{Name: "lb"}, "")
	challenge := Challenge{DNSName: "www.example.test", KeyAuthorization: testKeyAuthorization}
	stored, err := pki.TLSALPN01Certificate(challenge.DNSName, challenge.KeyAuthorization, now)
	if err != nil {
		t.Fatal(err)
	}
	otherName, _ := pki.TLSALPN01Certificate("api.example.test", challenge.KeyAuthorization, now)
	otherAuthorization, _ := pki.TLSALPN01Certificate(challenge.DNSName, "other.thumbprint", now)
	satisfied := s.satisfied(challenge)
	for name, tc := range map[string]struct {
		value []byte
		at    time.Time
		want  bool
	}{
		"the same challenge":           {value: stored, at: now, want: true},
		"another name":                 {value: otherName, at: now, want: false},
		"another key authorization":    {value: otherAuthorization, at: now, want: false},
		"not a certificate":            {value: []byte("garbage"), at: now, want: false},
		"10 minutes before it expires": {value: stored, at: now.Add(pki.TLSALPN01Validity - 10*time.Minute), want: false},
		"11 minutes before it expires": {value: stored, at: now.Add(pki.TLSALPN01Validity - 11*time.Minute), want: true},
	} {
		t.Run(name, func(t *testing.T) {
			clock.SetTime(tc.at)
			if got := satisfied(tc.value); got != tc.want {
				t.Errorf("satisfied = %v, want %v", got, tc.want)
			}
		})
	}
	s.typ = ChallengeHTTP01
	if s.satisfied(challenge) != nil {
		t.Error("http-01 values are compared as bytes; satisfied must be nil")
	}
}

// TestLoadBalancerReplaceable: another Certificate's tls-alpn-01 response is taken over only
// when it can no longer be validated.
func TestLoadBalancerReplaceable(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	holder := &certpilotv1alpha1.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "holder"}}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(holder).Build()
	s := newLoadBalancer(&Deps{Client: c}, Owner{Namespace: "team", Name: "web"}, Source{}, ChallengeTLSALPN01,
		certpilotv1alpha1.LoadBalancerRef{Name: "lb"}, "")
	valid, err := pki.TLSALPN01Certificate("www.example.test", testKeyAuthorization, now)
	if err != nil {
		t.Fatal(err)
	}
	expiredValue, _ := pki.TLSALPN01Certificate("www.example.test", testKeyAuthorization, now.Add(-2*pki.TLSALPN01Validity))
	key := certpilotv1alpha1.TLSALPN01Key("www.example.test")
	tests := map[string]struct {
		holder string
		value  []byte
		want   bool
	}{
		"a live Certificate's valid response":   {holder: "team/holder", value: valid, want: false},
		"a deleted Certificate's response":      {holder: "team/gone", value: valid, want: true},
		"a live Certificate's expired response": {holder: "team/holder", value: expiredValue, want: true},
		"a value that is no certificate":        {holder: "team/holder", value: []byte("garbage"), want: true},
		"a holder that names no Certificate":    {holder: "legacy", value: valid, want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := s.replaceable(context.Background(), now)(key, tc.holder, tc.value); got != tc.want {
				t.Errorf("replaceable = %v, want %v", got, tc.want)
			}
		})
	}
	s.typ = ChallengeHTTP01
	if !s.replaceable(context.Background(), now)(certpilotv1alpha1.HTTP01Key("tok"), "team/holder", []byte("x")) {
		t.Error("http-01 tokens never collide: a response must always be replaceable")
	}
}

// TestLoadBalancerCheck dials in-process servers as the CA's validator would: a TLS server
// negotiating acme-tls/1 for tls-alpn-01, an HTTP server for http-01.
func TestLoadBalancerCheck(t *testing.T) {
	now := time.Now()
	served, err := pki.TLSALPN01Certificate("www.example.test", testKeyAuthorization, now)
	if err != nil {
		t.Fatal(err)
	}
	certificate, err := tls.X509KeyPair(served, served)
	if err != nil {
		t.Fatal(err)
	}
	listener, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{certificate}, NextProtos: []string{acme.ALPNProtocol}, MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.(*tls.Conn).Handshake()
			}()
		}
	}()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "www.example.test" && r.URL.Path == "/.well-known/acme-challenge/tok" {
			_, _ = w.Write([]byte(testKeyAuthorization))
			return
		}
		http.NotFound(w, r)
	}))
	defer web.Close()
	webAddress := strings.TrimPrefix(web.URL, "http://")

	tests := map[string]struct {
		typ, probeAddress string
		challenge         Challenge
		wantErr           string
	}{
		"tls-alpn-01 served": {
			typ: ChallengeTLSALPN01, probeAddress: listener.Addr().String(),
			challenge: Challenge{DNSName: "www.example.test", KeyAuthorization: testKeyAuthorization},
		},
		"tls-alpn-01 of an older challenge served": {
			typ: ChallengeTLSALPN01, probeAddress: listener.Addr().String(),
			challenge: Challenge{DNSName: "www.example.test", KeyAuthorization: "newer.thumbprint"},
			wantErr:   "answers another challenge",
		},
		"http-01 served": {
			typ: ChallengeHTTP01, probeAddress: webAddress,
			challenge: Challenge{DNSName: "www.example.test", Token: "tok", KeyAuthorization: testKeyAuthorization},
		},
		"http-01 not served": {
			typ: ChallengeHTTP01, probeAddress: webAddress,
			challenge: Challenge{DNSName: "www.example.test", Token: "other", KeyAuthorization: testKeyAuthorization},
			wantErr:   "404",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newLoadBalancer(&Deps{}, Owner{}, Source{}, tc.typ, certpilotv1alpha1.LoadBalancerRef{Name: "lb"}, tc.probeAddress)
			// A failing check retries for publicationBackoff; a short deadline cuts that short.
			timeout := 10 * time.Second
			if tc.wantErr != "" {
				timeout = 200 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			err := s.Check(ctx, tc.challenge)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Check = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestLoadBalancerCheckDefaultAddress: without a probe address the check dials the name itself
// on the challenge's port (443 or 80).
func TestLoadBalancerCheckDefaultAddress(t *testing.T) {
	for typ, port := range map[string]string{ChallengeTLSALPN01: "443", ChallengeHTTP01: "80"} {
		t.Run(typ, func(t *testing.T) {
			s := newLoadBalancer(&Deps{}, Owner{}, Source{}, typ, certpilotv1alpha1.LoadBalancerRef{Name: "lb"}, "")
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // no dial leaves the machine; the error names the address it would have dialled
			err := s.checkOnce(ctx, Challenge{DNSName: "www.example.test", Token: "tok", KeyAuthorization: testKeyAuthorization})
			if want := net.JoinHostPort("www.example.test", port); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("checkOnce = %v, want an error naming %s", err, want)
			}
		})
	}
}

func TestLoadBalancerNotVisible(t *testing.T) {
	s := newLoadBalancer(&Deps{}, Owner{}, Source{}, ChallengeTLSALPN01, certpilotv1alpha1.LoadBalancerRef{Name: "lb"}, "")
	reason, message := s.NotVisible([]string{"first failure", "second failure"}, 3)
	if reason != "SelfCheckFailed" || !strings.Contains(message, "2 of 3") || !strings.Contains(message, "first failure (and 1 more)") {
		t.Errorf("NotVisible = %q, %q", reason, message)
	}
}
