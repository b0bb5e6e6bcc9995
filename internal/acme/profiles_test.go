package acme

import (
	"strings"
	"testing"
	"time"
)

func TestTooManyIdentifiers(t *testing.T) {
	for name, tc := range map[string]struct {
		profile     string
		identifiers int
		want        []string // substrings of the message; nil: accepted
	}{
		"tlsserver at its limit":      {profile: "tlsserver", identifiers: 25},
		"tlsserver over its limit":    {profile: "tlsserver", identifiers: 26, want: []string{"26 names", `profile "tlsserver"`, "at most 25", "classic profile (at most 100)"}},
		"shortlived over its limit":   {profile: "shortlived", identifiers: 30, want: []string{`profile "shortlived"`, "at most 25"}},
		"shortlived, one name":        {profile: "shortlived", identifiers: 1},
		"classic takes 100":           {profile: "classic", identifiers: 100},
		"classic over 100":            {profile: "classic", identifiers: 101, want: []string{"at most 100"}},
		"the server's default":        {identifiers: 100},
		"the server's default, 101":   {identifiers: 101, want: []string{"the server's default profile", "at most 100"}},
		"another CA's profile name":   {profile: "acme-90d", identifiers: 60},
		"profile names match exactly": {profile: "TLSServer", identifiers: 26},
	} {
		t.Run(name, func(t *testing.T) {
			got := TooManyIdentifiers(tc.profile, tc.identifiers)
			if tc.want == nil {
				if got != "" {
					t.Errorf("refused: %s", got)
				}
				return
			}
			for _, want := range tc.want {
				if !strings.Contains(got, want) {
					t.Errorf("message %q does not say %q", got, want)
				}
			}
			if tc.want != nil && strings.Contains(got, "classic profile") != (LimitsOf(tc.profile).MaxIdentifiers < 100) {
				t.Errorf("message %q: the hint to use classic belongs only to the short profiles", got)
			}
		})
	}
}

func TestLimitsOf(t *testing.T) {
	for profile, want := range map[string]ProfileLimits{
		"tlsserver":  {MaxIdentifiers: 25, PendingAuthorizationLifetime: time.Hour},
		"shortlived": {MaxIdentifiers: 25, PendingAuthorizationLifetime: time.Hour},
		"classic":    {MaxIdentifiers: 100, PendingAuthorizationLifetime: 7 * 24 * time.Hour},
		"":           {MaxIdentifiers: 100, PendingAuthorizationLifetime: 7 * 24 * time.Hour},
	} {
		if got := LimitsOf(profile); got != want {
			t.Errorf("LimitsOf(%q) = %+v, want %+v", profile, got, want)
		}
	}
}
