package acme

import (
	"fmt"
	"time"
)

// ProfileLimits are the limits of an issuance profile that certpilot checks before ordering.
type ProfileLimits struct {
	// MaxIdentifiers is the most identifiers (DNS names and IP addresses) one order may carry.
	MaxIdentifiers int
	// PendingAuthorizationLifetime is how long an authorization of a new order stays pending
	// before it expires (and the order with it).
	PendingAuthorizationLifetime time.Duration
}

// Let's Encrypt's limits, by profile name (https://letsencrypt.org/docs/profiles/): the tlsserver
// and shortlived profiles accept at most 25 identifiers per order and their pending
// authorizations expire after an hour; classic (and a server's default) accepts 100, with pending
// authorizations valid for a week.
var (
	classicLimits    = ProfileLimits{MaxIdentifiers: 100, PendingAuthorizationLifetime: 7 * 24 * time.Hour}
	shortOrderLimits = ProfileLimits{MaxIdentifiers: 25, PendingAuthorizationLifetime: time.Hour}
	profileLimits    = map[string]ProfileLimits{"classic": classicLimits, "tlsserver": shortOrderLimits, "shortlived": shortOrderLimits}
)

// LimitsOf returns the limits of an issuance profile by its name, as Let's Encrypt defines the
// names; another name, or none (the server's default), has the classic profile's limits, which
// are also the Certificate API's bound of 100 names.
func LimitsOf(profile string) ProfileLimits {
	if limits, ok := profileLimits[profile]; ok {
		return limits
	}
	return classicLimits
}

// TooManyIdentifiers says why an order of identifiers identifiers is more than profile accepts;
// empty when it is not. The CA would refuse the order (rejectedIdentifier or malformed), after
// the request: this says so before it, with what to change.
func TooManyIdentifiers(profile string, identifiers int) string {
	limits := LimitsOf(profile)
	if identifiers <= limits.MaxIdentifiers {
		return ""
	}
	name := fmt.Sprintf("the profile %q", profile)
	if profile == "" {
		name = "the server's default profile"
	}
	return fmt.Sprintf("%d names are more than %s accepts in one order (at most %d): split the names over several Certificates%s",
		identifiers, name, limits.MaxIdentifiers, fewerNamesHint(limits))
}

func fewerNamesHint(limits ProfileLimits) string {
	if limits.MaxIdentifiers >= classicLimits.MaxIdentifiers {
		return ""
	}
	return fmt.Sprintf(", or use an issuer with the classic profile (at most %d)", classicLimits.MaxIdentifiers)
}
