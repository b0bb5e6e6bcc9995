package edge

import (
	"crypto/tls"
	"testing"
)

// TestHelloFramed: helloFramed finds a ClientHello's end at every split point, whether its
// message is in one record or several, and gives up at once on what cannot be one.
func TestHelloFramed(t *testing.T) {
	hello := clientHello(&tls.Config{ServerName: "h.example.com"})
	var split []byte // the same message in records of at most 10 bytes
	for message := hello[5:]; len(message) > 0; {
		n := min(10, len(message))
		split = append(append(split, 22, 3, 1, 0, byte(n)), message[:n]...)
		message = message[n:]
	}
	for name, data := range map[string][]byte{"one record": hello, "records of 10 bytes": split} {
		for i := range len(data) {
			if helloFramed(data[:i]) {
				t.Fatalf("%s: framed after %d of %d bytes", name, i, len(data))
			}
		}
		if !helloFramed(data) {
			t.Errorf("%s: not framed when whole", name)
		}
		parsed, err := parseClientHello(data)
		if err != nil || parsed.ServerName != "h.example.com" {
			t.Errorf("%s: parsed %v, %v", name, parsed, err)
		}
	}
	for name, data := range map[string][]byte{
		"not a handshake record": []byte("GET / HTTP/1.1\r\n"),
		"oversized record":       {22, 3, 1, 0xff, 0xff},
		"not a ClientHello":      {22, 3, 3, 0, 4, 2, 0, 0, 0},
		"oversized message":      {22, 3, 1, 0, 4, 1, 0x01, 0x11, 0x70},
	} {
		if !helloFramed(data) {
			t.Errorf("%s: waits for more", name)
		}
		if _, err := parseClientHello(data); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func BenchmarkParseClientHello(b *testing.B) {
	hello := clientHello(&tls.Config{ServerName: "p.example.com", CurvePreferences: []tls.CurveID{tls.X25519}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseClientHello(hello); err != nil {
			b.Fatal(err)
		}
	}
}
