package edge_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge"
)

func TestHTTPHandler(t *testing.T) {
	store := edge.NewChallengeStore()
	if _, err := store.Replace(map[string][]byte{
		v1alpha1.HTTP01Key("tok_EN-1"): []byte("tok_EN-1.thumbprint"),
	}); err != nil {
		t.Fatal(err)
	}
	handler := edge.NewHTTPHandler(store)

	tests := map[string]struct {
		method, target string
		wantStatus     int
		wantBody       string // checked when wantStatus is 200
	}{
		"known token":                  {http.MethodGet, "/.well-known/acme-challenge/tok_EN-1", http.StatusOK, "tok_EN-1.thumbprint"},
		"HEAD of a known token":        {http.MethodHead, "/.well-known/acme-challenge/tok_EN-1", http.StatusOK, ""},
		"token is case-sensitive":      {http.MethodGet, "/.well-known/acme-challenge/TOK_EN-1", http.StatusNotFound, ""},
		"unknown token":                {http.MethodGet, "/.well-known/acme-challenge/other", http.StatusNotFound, ""},
		"empty token":                  {http.MethodGet, "/.well-known/acme-challenge/", http.StatusNotFound, ""},
		"nested path":                  {http.MethodGet, "/.well-known/acme-challenge/tok_EN-1/x", http.StatusNotFound, ""},
		"challenge directory":          {http.MethodGet, "/.well-known/acme-challenge", http.StatusNotFound, ""},
		"POST to a token":              {http.MethodPost, "/.well-known/acme-challenge/tok_EN-1", http.StatusMethodNotAllowed, ""},
		"root":                         {http.MethodGet, "/", http.StatusNotFound, ""},
		"other path":                   {http.MethodGet, "/index.html", http.StatusNotFound, ""},
		"query string does not matter": {http.MethodGet, "/.well-known/acme-challenge/tok_EN-1?x=1", http.StatusOK, "tok_EN-1.thumbprint"},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			recorder := httptest.NewRecorder()
			handler.ServeHTTP(recorder, httptest.NewRequest(test.method, test.target, nil))
			if recorder.Code != test.wantStatus {
				t.Fatalf("status %d, want %d", recorder.Code, test.wantStatus)
			}
			if test.wantStatus != http.StatusOK {
				return
			}
			if got := recorder.Header().Get("Content-Type"); got != "text/plain" {
				t.Errorf("Content-Type %q, want text/plain", got)
			}
			if got := recorder.Body.String(); got != test.wantBody {
				t.Errorf("body %q, want %q", got, test.wantBody)
			}
		})
	}
}
