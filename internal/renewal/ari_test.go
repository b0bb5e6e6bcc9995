package renewal

import (
	"errors"
	"testing"
	"time"
)

func TestARIRenewalTime(t *testing.T) {
	start, end := t0, t0.Add(2*day)
	width := int64(2 * day)
	fixed := func(v int64) func(int64) int64 {
		return func(n int64) int64 {
			if n != width {
				t.Errorf("random called with n = %d, want the window's width %d", n, width)
			}
			return v
		}
	}
	mustNotCall := func(int64) int64 {
		t.Error("random called for an invalid window")
		return 0
	}
	tests := map[string]struct {
		start, end time.Time
		random     func(int64) int64
		want       time.Time
		wantErr    bool
	}{
		"lowest draw is the window's start": {start: start, end: end, random: fixed(0), want: start},
		"middle draw is the middle":         {start: start, end: end, random: fixed(width / 2), want: start.Add(day)},
		"highest draw is just before the end": {
			start: start, end: end, random: fixed(width - 1), want: end.Add(-time.Nanosecond),
		},
		"draw past the end is clamped into the window": {
			start: start, end: end, random: fixed(width + 5), want: end.Add(-time.Nanosecond),
		},
		"negative draw is clamped to the start": {start: start, end: end, random: fixed(-7), want: start},
		"window in the past is valid":           {start: t0.Add(-3 * day), end: t0.Add(-day), random: func(int64) int64 { return 0 }, want: t0.Add(-3 * day)},
		"single-instant window is invalid":      {start: start, end: start, random: mustNotCall, wantErr: true},
		"end before start is invalid":           {start: end, end: start, random: mustNotCall, wantErr: true},
		"missing start is invalid":              {start: time.Time{}, end: end, random: mustNotCall, wantErr: true},
		"missing end is invalid":                {start: start, end: time.Time{}, random: mustNotCall, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ARIRenewalTime(tc.start, tc.end, tc.random)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidWindow) {
					t.Fatalf("ARIRenewalTime(%v, %v) error = %v, want ErrInvalidWindow", tc.start, tc.end, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ARIRenewalTime(%v, %v) error = %v, want none", tc.start, tc.end, err)
			}
			if !got.Equal(tc.want) {
				t.Errorf("ARIRenewalTime(%v, %v) = %v, want %v", tc.start, tc.end, got, tc.want)
			}
		})
	}
}

// TestARIRenewalTimeDefaultRandom checks that a nil random source draws real, varying points
// inside the window.
func TestARIRenewalTimeDefaultRandom(t *testing.T) {
	start, end := t0, t0.Add(day)
	seen := map[time.Time]bool{}
	for range 100 {
		got, err := ARIRenewalTime(start, end, nil)
		if err != nil {
			t.Fatalf("ARIRenewalTime error = %v", err)
		}
		if got.Before(start) || !got.Before(end) {
			t.Fatalf("ARIRenewalTime = %v, want within [%v, %v)", got, start, end)
		}
		seen[got] = true
	}
	if len(seen) < 2 {
		t.Errorf("100 draws gave %d distinct times, want randomness", len(seen))
	}
}

func TestChooseARIRenewalTime(t *testing.T) {
	// A 90-day certificate issued at t0; now is 50 days in.
	notAfter := t0.Add(90 * day)
	now := t0.Add(50 * day)
	future := Window{Start: now.Add(9 * day), End: now.Add(11 * day)}
	// lowest and highest draw the window's edges; a draw's n is the width of what remains.
	lowest := func(int64) int64 { return 0 }
	highest := func(n int64) int64 { return n - 1 }
	mustNotCall := func(int64) int64 {
		t.Error("random called, want the previous choice kept or an error")
		return 0
	}
	tests := map[string]struct {
		window   Window
		notAfter time.Time
		previous time.Time
		random   func(int64) int64
		want     time.Time
		wantErr  bool
	}{
		"window in the future, first choice": {
			window: future, notAfter: notAfter, random: lowest, want: future.Start,
		},
		"window in the future, last moment": {
			window: future, notAfter: notAfter, random: highest, want: future.End.Add(-time.Nanosecond),
		},
		"previous choice inside the window is kept": {
			window: future, notAfter: notAfter, previous: future.Start.Add(time.Hour), random: mustNotCall,
			want: future.Start.Add(time.Hour),
		},
		"previous choice at the window's start is kept": {
			window: future, notAfter: notAfter, previous: future.Start, random: mustNotCall, want: future.Start,
		},
		"previous choice at the window's end is outside: a new one": {
			window: future, notAfter: notAfter, previous: future.End, random: lowest, want: future.Start,
		},
		"window moved earlier (revocation): a new choice": {
			window: Window{Start: now.Add(-time.Hour), End: now}, notAfter: notAfter, previous: future.Start,
			random: lowest, want: now.Add(-time.Hour),
		},
		"window in the past: a time in the past, renew now": {
			window: Window{Start: now.Add(-2 * day), End: now.Add(-day)}, notAfter: notAfter, random: highest,
			want: now.Add(-day - time.Nanosecond),
		},
		"window past notAfter is cut at notAfter": {
			window: Window{Start: notAfter.Add(-day), End: notAfter.Add(day)}, notAfter: notAfter, random: highest,
			want: notAfter.Add(-time.Nanosecond),
		},
		"previous choice after notAfter is not kept": {
			window: Window{Start: notAfter.Add(-day), End: notAfter.Add(day)}, notAfter: notAfter,
			previous: notAfter.Add(time.Hour), random: lowest, want: notAfter.Add(-day),
		},
		"zero notAfter cuts nothing": {
			window: Window{Start: notAfter.Add(-day), End: notAfter.Add(day)}, random: highest,
			want: notAfter.Add(day - time.Nanosecond),
		},
		"window starting at notAfter is invalid": {
			window: Window{Start: notAfter, End: notAfter.Add(day)}, notAfter: notAfter, random: mustNotCall, wantErr: true,
		},
		"end before start is invalid": {
			window: Window{Start: future.End, End: future.Start}, notAfter: notAfter, random: mustNotCall, wantErr: true,
		},
		"end equal to start is invalid": {
			window: Window{Start: future.Start, End: future.Start}, notAfter: notAfter, random: mustNotCall, wantErr: true,
		},
		"missing start is invalid, even with a previous choice": {
			window: Window{End: future.End}, notAfter: notAfter, previous: future.Start, random: mustNotCall, wantErr: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ChooseARIRenewalTime(tc.window, tc.notAfter, tc.previous, tc.random)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidWindow) {
					t.Fatalf("ChooseARIRenewalTime = %v, %v; want ErrInvalidWindow", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tc.want) {
				t.Errorf("ChooseARIRenewalTime = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNextRenewalInfoFetch(t *testing.T) {
	tests := map[string]struct {
		retryAfter time.Duration
		want       time.Duration
	}{
		"Retry-After is followed":                {retryAfter: 3 * time.Hour, want: 3 * time.Hour},
		"no Retry-After: six hours":              {retryAfter: 0, want: 6 * time.Hour},
		"negative is no Retry-After":             {retryAfter: -time.Hour, want: 6 * time.Hour},
		"a second is raised to a minute":         {retryAfter: time.Second, want: time.Minute},
		"exactly a minute":                       {retryAfter: time.Minute, want: time.Minute},
		"a day is lowered to 12 hours":           {retryAfter: 24 * time.Hour, want: 12 * time.Hour},
		"exactly 12 hours":                       {retryAfter: 12 * time.Hour, want: 12 * time.Hour},
		"a month (bogus header) is 12 hours too": {retryAfter: 30 * day, want: 12 * time.Hour},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NextRenewalInfoFetch(t0, tc.retryAfter); !got.Equal(t0.Add(tc.want)) {
				t.Errorf("NextRenewalInfoFetch(t0, %v) = t0 + %v, want t0 + %v", tc.retryAfter, got.Sub(t0), tc.want)
			}
		})
	}
}

func TestCanReplace(t *testing.T) {
	const (
		server  = "https://acme-v02.api.letsencrypt.org/directory"
		account = "https://acme-v02.api.letsencrypt.org/acme/acct/1"
	)
	names := []string{"www.example.com", "example.com"}
	leaf := cert{
		key: testKey(t, "ECDSA", 256, "leaf"), commonName: names[0], dnsNames: names,
		notBefore: t0, notAfter: t0.Add(90 * day),
	}.pem(t)
	secret := func(edit func(*Secret)) *Secret {
		s := &Secret{CertificatePEM: leaf, IssuerServer: server, IssuerAccount: account}
		if edit != nil {
			edit(s)
		}
		return s
	}
	tests := map[string]struct {
		in      Input
		account string
		want    bool
	}{
		"same server, account and names": {
			in: Input{DNSNames: names, IssuerServer: server, Secret: secret(nil)}, account: account, want: true,
		},
		"server spelled differently": {
			in: Input{DNSNames: names, IssuerServer: "HTTPS://acme-v02.api.letsencrypt.org/directory/", Secret: secret(nil)}, account: account, want: true,
		},
		"one name in common is enough": {
			in: Input{DNSNames: []string{"Example.com.", "new.example.com"}, IssuerServer: server, Secret: secret(nil)}, account: account, want: true,
		},
		"no name in common": {
			in: Input{DNSNames: []string{"other.example.com"}, IssuerServer: server, Secret: secret(nil)}, account: account,
		},
		"an IP address in common": {
			in: Input{DNSNames: []string{"2001:db8::1"}, IssuerServer: server, Secret: secret(func(s *Secret) {
				s.CertificatePEM = cert{key: testKey(t, "ECDSA", 256, "leaf"), dnsNames: []string{"192.0.2.1", "2001:db8::1"},
					notBefore: t0, notAfter: t0.Add(6 * day)}.pem(t)
			})}, account: account, want: true,
		},
		"no IP address in common": {
			in: Input{DNSNames: []string{"192.0.2.2"}, IssuerServer: server, Secret: secret(func(s *Secret) {
				s.CertificatePEM = cert{key: testKey(t, "ECDSA", 256, "leaf"), dnsNames: []string{"192.0.2.1"},
					notBefore: t0, notAfter: t0.Add(6 * day)}.pem(t)
			})}, account: account,
		},
		"another server": {
			in: Input{DNSNames: names, IssuerServer: "https://acme-staging-v02.api.letsencrypt.org/directory", Secret: secret(nil)}, account: account,
		},
		"another account": {
			in: Input{DNSNames: names, IssuerServer: server, Secret: secret(nil)}, account: account + "0",
		},
		"Secret records no server": {
			in: Input{DNSNames: names, IssuerServer: server, Secret: secret(func(s *Secret) { s.IssuerServer = "" })}, account: account,
		},
		"Secret records no account": {
			in: Input{DNSNames: names, IssuerServer: server, Secret: secret(func(s *Secret) { s.IssuerAccount = "" })}, account: account,
		},
		"account unknown": {
			in: Input{DNSNames: names, IssuerServer: server, Secret: secret(nil)},
		},
		"issuer server unknown": {
			in: Input{DNSNames: names, Secret: secret(nil)}, account: account,
		},
		"certificate unreadable": {
			in: Input{DNSNames: names, IssuerServer: server, Secret: secret(func(s *Secret) { s.CertificatePEM = []byte("junk") })}, account: account,
		},
		"no Secret": {
			in: Input{DNSNames: names, IssuerServer: server}, account: account,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := CanReplace(tc.in, tc.account); got != tc.want {
				t.Errorf("CanReplace = %v, want %v", got, tc.want)
			}
		})
	}
}
