package metricsauth

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

// TestGuard drives the guard against client-go's fake clientset, which answers the two reviews
// as the apiserver would: tokens "reader-token" and "stranger-token" authenticate, only the
// reader may get /metrics, "broken" makes the apiserver fail.
func TestGuard(t *testing.T) {
	clientset := fake.NewClientset()
	reviews := 0
	apiserverDown := false
	clientset.PrependReactor("create", "tokenreviews", func(action clienttesting.Action) (bool, runtime.Object, error) {
		reviews++
		if apiserverDown {
			return true, nil, errors.New("connection refused")
		}
		review := action.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		switch review.Spec.Token {
		case "reader-token":
			review.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "reader"}}
		case "stranger-token":
			review.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "stranger"}}
		}
		return true, review, nil
	})
	clientset.PrependReactor("create", "subjectaccessreviews", func(action clienttesting.Action) (bool, runtime.Object, error) {
		review := action.(clienttesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		attributes := review.Spec.NonResourceAttributes
		review.Status.Allowed = review.Spec.User == "reader" && attributes != nil && attributes.Path == "/metrics" && attributes.Verb == "get"
		return true, review, nil
	})
	now := time.Now()
	g := newGuard(clientset.AuthenticationV1().TokenReviews(), clientset.AuthorizationV1().SubjectAccessReviews(), Options{})
	g.now = func() time.Time { return now }
	check := func(header string) int {
		request := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if header != "" {
			request.Header.Set("Authorization", header)
		}
		status, _ := g.check(request)
		return status
	}
	for header, want := range map[string]int{
		"":                      http.StatusUnauthorized,
		"Basic cmVhZGVyOg==":    http.StatusUnauthorized,
		"Bearer made-up":        http.StatusUnauthorized,
		"Bearer stranger-token": http.StatusForbidden,
		"Bearer reader-token":   http.StatusOK,
	} {
		if got := check(header); got != want {
			t.Errorf("Authorization %q: %d, want %d", header, got, want)
		}
	}

	// Decisions are reused: no review within the TTL, a new one after it.
	before := reviews
	if check("Bearer reader-token") != http.StatusOK || check("Bearer stranger-token") != http.StatusForbidden || reviews != before {
		t.Errorf("cached decisions asked the apiserver %d more times", reviews-before)
	}
	now = now.Add(allowTTL + time.Second)
	if check("Bearer reader-token") != http.StatusOK || reviews != before+1 {
		t.Errorf("an expired decision was not reviewed again (%d reviews)", reviews-before)
	}

	// An apiserver that does not answer is a 500, never cached.
	apiserverDown = true
	if got := check("Bearer other-token"); got != http.StatusInternalServerError {
		t.Errorf("apiserver down: %d, want 500", got)
	}
	apiserverDown = false
	if got := check("Bearer other-token"); got != http.StatusUnauthorized {
		t.Errorf("apiserver back: %d, want 401 (the failure was cached?)", got)
	}
}

// TestGuardCacheIsBounded: a flood of distinct tokens keeps the cache at its size, and evicts
// least recently used decisions: a scraper asking in between keeps its decision.
func TestGuardCacheIsBounded(t *testing.T) {
	clientset := fake.NewClientset()
	reviews := map[string]int{}
	clientset.PrependReactor("create", "tokenreviews", func(action clienttesting.Action) (bool, runtime.Object, error) {
		review := action.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		reviews[review.Spec.Token]++
		review.Status.Authenticated = review.Spec.Token == "reader-token"
		review.Status.User.Username = "reader"
		return true, review, nil
	})
	clientset.PrependReactor("create", "subjectaccessreviews", func(action clienttesting.Action) (bool, runtime.Object, error) {
		review := action.(clienttesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		review.Status.Allowed = true
		return true, review, nil
	})
	const size = 64
	g := newGuard(clientset.AuthenticationV1().TokenReviews(), clientset.AuthorizationV1().SubjectAccessReviews(), Options{CacheSize: size})
	check := func(token string) int {
		request := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		request.Header.Set("Authorization", "Bearer "+token)
		status, _ := g.check(request)
		return status
	}
	if check("reader-token") != http.StatusOK {
		t.Fatal("the reader was refused")
	}
	const flood = 50 * size
	for i := range flood {
		if got := check(fmt.Sprintf("random-%d", i)); got != http.StatusUnauthorized {
			t.Fatalf("random token %d: %d, want 401", i, got)
		}
		if i%(size/2) == 0 && check("reader-token") != http.StatusOK {
			t.Fatalf("the reader was refused after %d random tokens", i)
		}
		if n := g.decisions.len(); n > size {
			t.Fatalf("%d decisions cached after %d distinct tokens, bound %d", n, i+1, size)
		}
	}
	if reviews["reader-token"] != 1 {
		t.Errorf("the reader's token was reviewed %d times during the flood, want 1 (its decision was evicted)", reviews["reader-token"])
	}
	// The oldest random tokens were evicted: reviewed again.
	check("random-0")
	if reviews["random-0"] != 2 {
		t.Errorf("random-0 reviewed %d times, want 2 (evicted, then reviewed again)", reviews["random-0"])
	}
}

// TestGuardAudiences: the guard sends its audiences, and refuses a token the apiserver
// authenticated without saying it is for one of them (an authenticator that ignores audiences).
func TestGuardAudiences(t *testing.T) {
	clientset := fake.NewClientset()
	var sent [][]string
	clientset.PrependReactor("create", "tokenreviews", func(action clienttesting.Action) (bool, runtime.Object, error) {
		review := action.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		sent = append(sent, review.Spec.Audiences)
		review.Status.Authenticated = true
		review.Status.User.Username = "reader"
		if review.Spec.Token == "for-metrics" {
			review.Status.Audiences = []string{"certpilot-metrics"}
		}
		return true, review, nil
	})
	clientset.PrependReactor("create", "subjectaccessreviews", func(action clienttesting.Action) (bool, runtime.Object, error) {
		review := action.(clienttesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		review.Status.Allowed = true
		return true, review, nil
	})
	g := newGuard(clientset.AuthenticationV1().TokenReviews(), clientset.AuthorizationV1().SubjectAccessReviews(),
		Options{Audiences: []string{"certpilot-metrics", "other"}})
	for token, want := range map[string]int{"for-metrics": http.StatusOK, "no-audiences": http.StatusUnauthorized} {
		request := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		request.Header.Set("Authorization", "Bearer "+token)
		if got, _ := g.check(request); got != want {
			t.Errorf("%s: %d, want %d", token, got, want)
		}
	}
	for _, audiences := range sent {
		if !slices.Equal(audiences, []string{"certpilot-metrics", "other"}) {
			t.Errorf("a TokenReview was sent with audiences %q", audiences)
		}
	}
}
