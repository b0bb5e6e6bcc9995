package v1alpha1

import (
	"strings"
	"testing"
)

// FuzzParseChallengeKey checks that ParseChallengeKey accepts exactly the keys TLSALPN01Key and
// HTTP01Key write: whatever it accepts re-encodes to the key it was given (DNS names up to case,
// which TLSALPN01Key folds and the edge ignores), and every key it accepts lands in a shard.
func FuzzParseChallengeKey(f *testing.F) {
	for _, key := range []string{
		TLSALPN01Key("www.example.com"),
		TLSALPN01Key("xn--bcher-kva.example"),
		"tls-alpn-01.WWW.Example.COM.pem",
		HTTP01Key("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"),
		HTTP01Key("a.b"),
		"http-01.",
		"tls-alpn-01..pem",
		"tls-alpn-01.example.com",
		"example.com.pem",
		"tls.crt",
		"",
	} {
		f.Add(key)
	}
	f.Fuzz(func(t *testing.T, key string) {
		challengeType, name, ok := ParseChallengeKey(key)
		if !ok {
			return
		}
		if name == "" {
			t.Fatalf("ParseChallengeKey(%q) accepted an empty name", key)
		}
		var encoded string
		switch challengeType {
		case "tls-alpn-01":
			encoded, key = TLSALPN01Key(name), strings.ToLower(key)
		case "http-01":
			encoded = HTTP01Key(name)
		default:
			t.Fatalf("ParseChallengeKey(%q) returned challenge type %q", key, challengeType)
		}
		if encoded != key {
			t.Fatalf("ParseChallengeKey(%q) = %q, %q: that re-encodes to %q", key, challengeType, name, encoded)
		}
		if shard := ChallengeShard(key); shard < 0 || shard >= ChallengeShards {
			t.Fatalf("ChallengeShard(%q) = %d, outside [0, %d)", key, shard, ChallengeShards)
		}
	})
}
