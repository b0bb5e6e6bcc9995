package v1alpha1

import (
	"net/netip"
	"slices"
)

// Identifiers returns the names the certificate is for, as its ACME order lists them:
// spec.dnsNames, then spec.ipAddresses. A DNS name never parses as an IP address (admission
// refuses such names), so IsIPAddress tells the two kinds apart.
func (s *CertificateSpec) Identifiers() []string {
	return append(slices.Clone(s.DNSNames), s.IPAddresses...)
}

// IsIPAddress reports whether identifier (an entry of Identifiers) is an IP address rather
// than a DNS name.
func IsIPAddress(identifier string) bool {
	_, err := netip.ParseAddr(identifier)
	return err == nil
}

// SplitIdentifiers splits identifiers into DNS names and IP addresses, each in the order given.
func SplitIdentifiers(identifiers []string) (dnsNames, ipAddresses []string) {
	for _, identifier := range identifiers {
		if IsIPAddress(identifier) {
			ipAddresses = append(ipAddresses, identifier)
		} else {
			dnsNames = append(dnsNames, identifier)
		}
	}
	return dnsNames, ipAddresses
}

// Identifiers returns the names the order was created for: its DNS names, then its IP
// addresses.
func (o *OrderStatus) Identifiers() []string {
	return append(slices.Clone(o.DNSNames), o.IPAddresses...)
}

// Identifier is the DNS name or the IP address the challenge validates.
func (c *ChallengeStatus) Identifier() string {
	if c.IPAddress != "" {
		return c.IPAddress
	}
	return c.DNSName
}

// SetIdentifier records identifier (a DNS name or an IP address) as the name the challenge
// validates.
func (c *ChallengeStatus) SetIdentifier(identifier string) {
	c.DNSName, c.IPAddress = identifier, ""
	if IsIPAddress(identifier) {
		c.DNSName, c.IPAddress = "", identifier
	}
}

// Names returns the names this solver validates: its DNS names, then its IP addresses.
func (n *NamedSolver) Names() []string {
	return append(slices.Clone(n.DNSNames), n.IPAddresses...)
}
