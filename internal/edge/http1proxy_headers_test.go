package edge

import "testing"

// TestRequestRemovableHeaders: the kinds of removable fields in a raw request header section,
// whatever their case, and no kind for fields that only look alike.
func TestRequestRemovableHeaders(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want uint8
	}{
		{"Host: a\r\nUser-Agent: wrk\r\n\r\n", 0},
		{"Host: a\r\nAccept: */*\r\nCookie: a=b\r\nContent-Type: x\r\nContent-Length: 1\r\n\r\n", 0},
		{"Host: a\r\nConnection: close\r\n\r\n", removableConnection},
		{"Host: a\r\nconnection: keep-alive\r\n\r\n", removableConnection},
		{"Host: a\r\nUPGRADE: h2c\r\n\r\n", removableHopByHop},
		{"Host: a\r\nTE: trailers\r\n\r\n", removableHopByHop},
		{"Host: a\r\nExpect: 100-continue\r\n\r\n", removableHopByHop},
		{"Host: a\r\nKeep-Alive: 5\r\nProxy-Authorization: x\r\n\r\n", removableHopByHop},
		{"Host: a\r\nx-forwarded-for: 1.2.3.4\r\n\r\n", removableForwarded},
		{"Host: a\r\nForwarded: for=x\r\nConnection: foo\r\nTrailer: x\r\n\r\n", removableHeaderBits},
		{"Host: a\r\nX-Forwarded-Fox: x\r\nUpgrades: x\r\nConnectio: x\r\nT: x\r\n\r\n", 0},
		{"Host: a\r\nKeep_Alive: x\r\nTe\x00: x\r\n\r\n", 0},
		{"Host: a\r\nnot a header line\r\n\r\n", removableHeaderBits},
		{"Host: a\r\nUser-Agent: x", removableHeaderBits},
	} {
		if got := requestRemovableHeaders([]byte(tc.raw)); got != tc.want {
			t.Errorf("requestRemovableHeaders(%q) = %03b, want %03b", tc.raw, got, tc.want)
		}
	}
}

func TestEqualFoldString(t *testing.T) {
	for _, tc := range []struct {
		b, s string
		want bool
	}{
		{"Upgrade", "Upgrade", true},
		{"uPGRADE", "Upgrade", true},
		{"Upgrad", "Upgrade", false},
		{"X-Forwarded-For", "x-forwarded-for", true},
		{"X\rForwarded-For", "X-Forwarded-For", false}, // '\r'|0x20 == '-'
		{"Te", "T\x05", false},
		{"[e", "{e", false},
	} {
		if got := equalFoldString([]byte(tc.b), tc.s); got != tc.want {
			t.Errorf("equalFoldString(%q, %q) = %v, want %v", tc.b, tc.s, got, tc.want)
		}
	}
}
