package metricsauth

import (
	"errors"
	"net/http"
	"net/http/httptest"
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
	g := &guard{
		tokens: clientset.AuthenticationV1().TokenReviews(), access: clientset.AuthorizationV1().SubjectAccessReviews(),
		decisions: map[[32]byte]decision{}, now: func() time.Time { return now },
	}
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
