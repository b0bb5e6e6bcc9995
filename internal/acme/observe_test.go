package acme

import "testing"

func TestEndpoint(t *testing.T) {
	tests := map[string]string{
		"/dir":                                  "directory",
		"/directory":                            "directory",
		"/nonce-plz":                            "newNonce",
		"/acme/new-nonce":                       "newNonce",
		"/sign-me-up":                           "newAccount",
		"/acme/new-acct":                        "newAccount",
		"/my-account/1":                         "account",
		"/acme/acct/123":                        "account",
		"/order-plz":                            "newOrder",
		"/acme/new-order":                       "newOrder",
		"/my-order/abc":                         "order",
		"/acme/order/1/2":                       "order",
		"/authZ/abc":                            "authorization",
		"/acme/authz-v3/1":                      "authorization",
		"/chalZ/abc":                            "challenge",
		"/acme/chall-v3/1/x":                    "challenge",
		"/finalize-order/abc":                   "finalize",
		"/acme/finalize/1/2":                    "finalize",
		"/certZ/abc":                            "certificate",
		"/acme/cert/abc":                        "certificate",
		"/draft-ietf-acme-ari-03/renewalInfo/x": "renewalInfo",
		"/something":                            "other",
	}
	for path, want := range tests {
		if got := Endpoint("POST", path); got != want {
			t.Errorf("Endpoint(%q) = %q, want %q", path, got, want)
		}
	}
}
