package netguard

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	loopback := Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	everything := Policy{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	tests := map[string]struct {
		policy    Policy
		address   string
		wantRule  string // empty: allowed
		grantable bool
	}{
		"public IPv4":                        {address: "93.184.216.34"},
		"public IPv6":                        {address: "2606:2800:220:1:248:1893:25c8:1946"},
		"loopback, not granted":              {address: "127.0.0.1", wantRule: "loopback", grantable: true},
		"loopback IPv6, not granted":         {address: "::1", wantRule: "loopback", grantable: true},
		"loopback, granted":                  {policy: loopback, address: "127.0.0.1"},
		"loopback in IPv4-mapped IPv6":       {address: "::ffff:127.0.0.1", wantRule: "loopback", grantable: true},
		"loopback in IPv4-mapped, granted":   {policy: loopback, address: "::ffff:127.0.0.1"},
		"private 10/8":                       {address: "10.96.0.1", wantRule: "private", grantable: true},
		"private 172.16/12":                  {address: "172.20.1.1", wantRule: "private", grantable: true},
		"private 192.168/16":                 {address: "192.168.1.1", wantRule: "private", grantable: true},
		"unique local IPv6":                  {address: "fd12:3456::1", wantRule: "private", grantable: true},
		"shared (CGNAT, pod ranges)":         {address: "100.64.0.10", wantRule: "shared", grantable: true},
		"private, another prefix granted":    {policy: loopback, address: "10.0.0.1", wantRule: "private", grantable: true},
		"private, granted":                   {policy: Policy{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, address: "10.1.2.3"},
		"private, just outside the grant":    {policy: Policy{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, address: "10.2.0.1", wantRule: "private", grantable: true},
		"metadata (AWS, GCP, Azure)":         {address: "169.254.169.254", wantRule: "link-local"},
		"metadata even when all is granted":  {policy: everything, address: "169.254.169.254", wantRule: "link-local"},
		"metadata, IPv4-mapped":              {policy: everything, address: "::ffff:169.254.169.254", wantRule: "link-local"},
		"metadata AWS IPv6":                  {policy: everything, address: "fd00:ec2::254", wantRule: "metadata"},
		"metadata Alibaba":                   {policy: everything, address: "100.100.100.200", wantRule: "metadata"},
		"metadata Oracle":                    {policy: everything, address: "192.0.0.192", wantRule: "special-purpose"},
		"link-local IPv6":                    {policy: everything, address: "fe80::1", wantRule: "link-local"},
		"link-local IPv6 with a zone":        {policy: everything, address: "fe80::1%eth0", wantRule: "link-local"},
		"unspecified reaches the local host": {policy: everything, address: "0.0.0.0", wantRule: "unspecified"},
		"unspecified IPv6":                   {policy: everything, address: "::", wantRule: "unspecified"},
		"multicast":                          {policy: everything, address: "224.0.0.1", wantRule: "multicast"},
		"broadcast":                          {policy: everything, address: "255.255.255.255", wantRule: "broadcast"},
		"NAT64 of an internal address":       {address: "64:ff9b::a00:1", wantRule: "NAT64", grantable: true},
		"6to4":                               {address: "2002:a00:1::1", wantRule: "6to4", grantable: true},
		"documentation":                      {address: "192.0.2.1", wantRule: "documentation", grantable: true},
		"everything granted opens private":   {policy: everything, address: "10.0.0.1"},
		"everything granted opens loopback":  {policy: everything, address: "127.0.0.1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.policy.Check(netip.MustParseAddr(tc.address))
			if tc.wantRule == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want allowed", tc.address, err)
				}
				return
			}
			refused, ok := err.(*RefusedError)
			if !ok {
				t.Fatalf("Check(%s) = %v, want refused by %q", tc.address, err, tc.wantRule)
			}
			if refused.Rule != tc.wantRule || refused.Grantable != tc.grantable {
				t.Errorf("Check(%s) refused by %q (grantable %v), want %q (grantable %v)", tc.address, refused.Rule, refused.Grantable, tc.wantRule, tc.grantable)
			}
		})
	}
}

func TestParseCIDRs(t *testing.T) {
	tests := map[string]struct {
		list    string
		want    string
		wantErr bool
	}{
		"empty":                {list: "", want: ""},
		"prefixes and spaces":  {list: " 127.0.0.0/8, ::1/128 ,10.1.0.0/16", want: "127.0.0.0/8,::1/128,10.1.0.0/16"},
		"single address":       {list: "10.1.2.3", want: "10.1.2.3/32"},
		"unmasked bits":        {list: "10.1.2.3/8", want: "10.0.0.0/8"},
		"IPv4-mapped prefix":   {list: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		"not an address":       {list: "cluster", wantErr: true},
		"bad prefix length":    {list: "10.0.0.0/33", wantErr: true},
		"one bad item of many": {list: "127.0.0.0/8,nope", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			prefixes, err := ParseCIDRs(tc.list)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseCIDRs(%q) = %v, want error %v", tc.list, err, tc.wantErr)
			}
			if got := (Policy{Allow: prefixes}).String(); !tc.wantErr && got != tc.want {
				t.Errorf("ParseCIDRs(%q) = %s, want %s", tc.list, got, tc.want)
			}
		})
	}
}

// TestControl dials a real listener on loopback through the hook: refused without a grant
// (the listener accepts nothing), connected with one.
func TestControl(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	var accepted atomic.Int64
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err = Policy{}.Dialer(net.Dialer{}).DialContext(ctx, "tcp", listener.Addr().String())
	if !IsRefused(err) {
		t.Fatalf("dial without a grant: %v, want refused", err)
	}
	// A name that resolves to loopback is refused after resolution.
	_, err = Policy{}.Dialer(net.Dialer{}).DialContext(ctx, "tcp", "localhost:"+portOf(t, listener))
	if !IsRefused(err) {
		t.Fatalf("dial of localhost without a grant: %v, want refused", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the listener accepted %d connections, want 0", n)
	}

	granted := Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	ctx = WithPolicy(ctx, granted)
	conn, err := DialerFrom(ctx, net.Dialer{}).DialContext(ctx, "tcp", listener.Addr().String())
	if err != nil {
		t.Fatalf("dial with loopback granted: %v", err)
	}
	conn.Close()
	if _, ok := FromContext(context.Background()); ok {
		t.Error("a bare context carries a policy")
	}
}

func portOf(t *testing.T, listener net.Listener) string {
	t.Helper()
	_, port, err := net.SplitHostPort(listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}
