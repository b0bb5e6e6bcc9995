package pki

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// A certificate's names are DNS names and IP addresses (RFC 8738). certpilot carries both as
// strings, an IP address in its canonical form (netip.Addr.String), and tells them apart by
// parsing: a DNS name never parses as an IP address.

// ParseIP returns name as an IP address, if it is one. IPv4-mapped IPv6 addresses are
// returned as IPv4, as the CA and the TLS stack treat them.
func ParseIP(name string) (netip.Addr, bool) {
	addr, err := netip.ParseAddr(name)
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, false
	}
	return addr.Unmap(), true
}

// SplitNames splits names into DNS names and IP addresses, each in the order given.
func SplitNames(names []string) (dnsNames []string, ips []net.IP) {
	for _, name := range names {
		if addr, ok := ParseIP(name); ok {
			ips = append(ips, net.IP(addr.AsSlice()))
			continue
		}
		dnsNames = append(dnsNames, name)
	}
	return dnsNames, ips
}

// LeafNames returns cert's DNS and IP address subject alternative names: the DNS names as
// written, then each IP address in canonical form.
func LeafNames(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	names := slices.Clone(cert.DNSNames)
	for _, ip := range cert.IPAddresses {
		if addr, ok := netip.AddrFromSlice(ip); ok {
			names = append(names, addr.Unmap().String())
		}
	}
	return names
}

// NamesEqual reports whether cert's DNS and IP address subject alternative names are exactly
// names (DNS names and IP addresses), ignoring order, case and duplicates: the names a spec asks
// for are a set, and a CA may reorder them.
func NamesEqual(cert *x509.Certificate, names []string) bool {
	if cert == nil {
		return false
	}
	return slices.Equal(NormalizeNames(LeafNames(cert)), NormalizeNames(names))
}

// NormalizeNames returns names sorted, without duplicates, DNS names in lower case without a
// trailing dot and IP addresses in canonical form.
func NormalizeNames(names []string) []string {
	normalized := make([]string, 0, len(names))
	for _, name := range names {
		if addr, ok := ParseIP(name); ok {
			normalized = append(normalized, addr.String())
			continue
		}
		normalized = append(normalized, strings.ToLower(strings.TrimSuffix(name, ".")))
	}
	slices.Sort(normalized)
	return slices.Compact(normalized)
}

// TLSALPN01ServerName is the server name (SNI) a tls-alpn-01 validator sends for name: the
// name itself, or for an IP address its reverse-DNS name (RFC 8738 section 6:
// "1.2.0.192.in-addr.arpa", or the nibbles of an IPv6 address under "ip6.arpa"), lower case,
// without a trailing dot.
func TLSALPN01ServerName(name string) string {
	addr, ok := ParseIP(name)
	if !ok {
		return name
	}
	return ReverseName(addr)
}

// ReverseName is addr's reverse-DNS name (RFC 1035 section 3.5, RFC 3596 section 2.5) without
// a trailing dot.
func ReverseName(addr netip.Addr) string {
	addr = addr.Unmap()
	var b strings.Builder
	if addr.Is4() {
		ip := addr.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.in-addr.arpa", ip[3], ip[2], ip[1], ip[0])
		return b.String()
	}
	const hex = "0123456789abcdef"
	ip := addr.As16()
	for i := len(ip) - 1; i >= 0; i-- {
		b.WriteByte(hex[ip[i]&0x0f])
		b.WriteByte('.')
		b.WriteByte(hex[ip[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa")
	return b.String()
}

// IPFromReverseName returns the IP address whose reverse-DNS name is name (case-insensitive,
// with or without a trailing dot), if name is one: the inverse of ReverseName.
func IPFromReverseName(name string) (netip.Addr, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		slices.Reverse(labels)
		addr, err := netip.ParseAddr(strings.Join(labels, "."))
		if err != nil || !addr.Is4() || ReverseName(addr) != name {
			return netip.Addr{}, false
		}
		return addr, true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var ip [16]byte
		for i, label := range labels {
			if len(label) != 1 {
				return netip.Addr{}, false
			}
			nibble := strings.IndexByte("0123456789abcdef", label[0])
			if nibble < 0 {
				return netip.Addr{}, false
			}
			// labels[0] is the low nibble of the last byte.
			byteIndex := 15 - i/2
			if i%2 == 0 {
				ip[byteIndex] |= byte(nibble)
			} else {
				ip[byteIndex] |= byte(nibble) << 4
			}
		}
		return netip.AddrFrom16(ip), true
	}
	return netip.Addr{}, false
}
