package edge

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/cryptobyte"
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
		parsed, err := parseHello(data)
		if err != nil || parsed.serverName != "h.example.com" {
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
		if _, err := parseHello(data); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// cryptoTLSHello parses data as crypto/tls's server does (readClientHello): the reference
// parseHello must agree with.
func cryptoTLSHello(data []byte) (*tls.ClientHelloInfo, error) {
	hello, _, err := readClientHello(&helloConn{data: bytes.Clone(data)}, new(bytes.Buffer))
	return hello, err
}

// sameAsCryptoTLS reports how parseHello's result differs from crypto/tls's on data, or "".
func sameAsCryptoTLS(data []byte) string {
	hello, err := parseHello(data)
	want, wantErr := cryptoTLSHello(data)
	switch {
	case (err == nil) != (wantErr == nil):
		return "parseHello: " + errString(err) + "; crypto/tls: " + errString(wantErr)
	case err != nil:
		return ""
	case hello.serverName != want.ServerName:
		return "server name " + hello.serverName + ", crypto/tls " + want.ServerName
	case !slices.Equal(helloProtocols(hello), want.SupportedProtos):
		return "protocols " + strings.Join(helloProtocols(hello), ",") + ", crypto/tls " + strings.Join(want.SupportedProtos, ",")
	case hello.offers(acme.ALPNProto) != offersACMETLS(want):
		return "offers acme-tls/1 differently"
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// helloProtocols lists the ALPN protocols of a parsed hello.
func helloProtocols(hello helloInfo) []string {
	var protocols []string
	for list := hello.protocols; !list.Empty(); {
		var protocol cryptobyte.String
		list.ReadUint8LengthPrefixed(&protocol)
		protocols = append(protocols, string(protocol))
	}
	return protocols
}

// u8 and u16 join parts behind a one- or two-byte length.
func u8(parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append([]byte{byte(len(body))}, body...)
}

func u16(parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append([]byte{byte(len(body) >> 8), byte(len(body))}, body...)
}

// helloExtension is an extension of a hand-made hello: its code and data.
type helloExtension struct {
	code uint16
	data []byte
}

func sni(names ...string) helloExtension {
	var list [][]byte
	for _, name := range names {
		list = append(list, append([]byte{0}, u16([]byte(name))...))
	}
	return helloExtension{extensionServerName, u16(list...)}
}

func alpn(protocols ...string) helloExtension {
	var list [][]byte
	for _, protocol := range protocols {
		list = append(list, u8([]byte(protocol)))
	}
	return helloExtension{extensionALPN, u16(list...)}
}

// helloMessageBytes is a ClientHello handshake message (TLS 1.2 legacy version, one cipher
// suite, null compression) with extensions; without any, it has no extensions block.
func helloMessageBytes(extensions ...helloExtension) []byte {
	var body [][]byte
	body = append(body, []byte{3, 3}, make([]byte, 32), u8(), u16([]byte{0x13, 0x01}), u8([]byte{0}))
	if extensions != nil {
		var block [][]byte
		for _, extension := range extensions {
			block = append(block, []byte{byte(extension.code >> 8), byte(extension.code)}, u16(extension.data))
		}
		body = append(body, u16(block...))
	}
	message := bytes.Join(body, nil)
	return append([]byte{typeClientHello, byte(len(message) >> 16), byte(len(message) >> 8), byte(len(message))}, message...)
}

// withSpareByte appends a byte to a handshake message, its length counting it.
func withSpareByte(message []byte) []byte {
	message = append(bytes.Clone(message), 0)
	n := len(message) - 4
	message[1], message[2], message[3] = byte(n>>16), byte(n>>8), byte(n)
	return message
}

// records frames payload in records of type typ, at most size bytes each.
func records(typ byte, payload []byte, size int) []byte {
	var out []byte
	for chunk := range slices.Chunk(payload, size) {
		out = append(append(out, typ, 3, 1, byte(len(chunk)>>8), byte(len(chunk))), chunk...)
	}
	return out
}

// handMadeHello is a ClientHello with extensions in one record.
func handMadeHello(extensions ...helloExtension) []byte {
	return records(recordTypeHandshake, helloMessageBytes(extensions...), maxPlaintext)
}

// echConfigList is an ECHConfigList (draft-ietf-tls-esni) with one X25519 configuration
// for public.example.com, as a client-facing server would publish it.
func echConfigList(tb testing.TB) []byte {
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	config := bytes.Join([][]byte{
		{7},          // config id
		{0x00, 0x20}, // DHKEM(X25519, HKDF-SHA256)
		u16(key.PublicKey().Bytes()),
		u16([]byte{0, 1, 0, 1}), // HKDF-SHA256, AES-128-GCM
		{64},                    // maximum name length
		u8([]byte("public.example.com")),
		u16(), // no extensions
	}, nil)
	return u16([]byte{0xfe, 0x0d}, u16(config))
}

// goClientHellos are the ClientHellos of Go's TLS client for varied configurations.
func goClientHellos(tb testing.TB) map[string][]byte {
	many := make([]string, 40)
	for i := range many {
		many[i] = strings.Repeat("p", i+1)
	}
	configs := map[string]*tls.Config{
		"defaults":             {ServerName: "www.example.com"},
		"no SNI":               {InsecureSkipVerify: true},
		"no SNI, acme-tls/1":   {InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"}},
		"acme-tls/1":           {ServerName: "a.example.com", NextProtos: []string{"acme-tls/1"}},
		"h2 and http/1.1":      {ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}},
		"40 ALPN protocols":    {ServerName: "many.example.com", NextProtos: many},
		"TLS 1.2 only":         {ServerName: "old.example.com", MaxVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1", "acme-tls/1"}},
		"TLS 1.3 only":         {ServerName: "new.example.com", MinVersion: tls.VersionTLS13},
		"X25519 only":          {ServerName: "x.example.com", CurvePreferences: []tls.CurveID{tls.X25519}},
		"P-384 and P-521":      {ServerName: "p.example.com", CurvePreferences: []tls.CurveID{tls.CurveP384, tls.CurveP521}},
		"no session tickets":   {ServerName: "t.example.com", SessionTicketsDisabled: true},
		"upper-case name":      {ServerName: "WWW.Example.COM"},
		"long name":            {ServerName: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example.com"},
		"IDN name":             {ServerName: "xn--bcher-kva.example"},
		"ECH":                  {ServerName: "secret.example.com", EncryptedClientHelloConfigList: echConfigList(tb), MinVersion: tls.VersionTLS13},
		"ECH and ALPN":         {ServerName: "secret.example.com", EncryptedClientHelloConfigList: echConfigList(tb), NextProtos: []string{"h2"}},
		"client session cache": {ServerName: "c.example.com", ClientSessionCache: tls.NewLRUClientSessionCache(1)},
	}
	hellos := make(map[string][]byte, len(configs))
	for name, config := range configs {
		hellos[name] = clientHello(config)
	}
	return hellos
}

// TestParseHello: parseHello gives what crypto/tls's server gives (server name and ALPN
// protocols, bytes as sent) for the hellos of Go's client and refuses exactly what it refuses.
func TestParseHello(t *testing.T) {
	for name, hello := range goClientHellos(t) {
		t.Run("Go client, "+name, func(t *testing.T) {
			if diff := sameAsCryptoTLS(hello); diff != "" {
				t.Error(diff)
			}
			if diff := sameAsCryptoTLS(fragmented(hello, 7)); diff != "" {
				t.Errorf("in records of 7 bytes: %s", diff)
			}
			if _, err := parseHello(hello); err != nil {
				t.Error(err)
			}
		})
	}

	warning := []byte{recordTypeAlert, 3, 1, 0, 2, alertLevelWarning, 112} // unrecognized_name
	unknown := func(code uint16, data ...byte) helloExtension { return helloExtension{code, data} }
	var thirty []helloExtension
	for i := range 30 {
		thirty = append(thirty, unknown(uint16(0x4000+i)))
	}
	valid := handMadeHello(sni("a.example.com"))
	for name, test := range map[string]struct {
		data       []byte
		serverName string // "-": refused
		acme       bool
	}{
		"no extensions":                       {handMadeHello(), "", false},
		"no SNI":                              {handMadeHello(alpn("h2")), "", false},
		"SNI":                                 {valid, "a.example.com", false},
		"SNI as sent, upper case":             {handMadeHello(sni("A.Example.COM")), "A.Example.COM", false},
		"IPv4 literal SNI":                    {handMadeHello(sni("192.0.2.1")), "192.0.2.1", false},
		"IPv6 literal SNI":                    {handMadeHello(sni("2001:db8::1")), "2001:db8::1", false},
		"SNI with a trailing dot":             {handMadeHello(sni("a.example.com.")), "-", false},
		"two host names":                      {handMadeHello(sni("a.example.com", "b.example.com")), "-", false},
		"an empty host name":                  {handMadeHello(sni("")), "-", false},
		"an empty name list":                  {handMadeHello(helloExtension{extensionServerName, u16()}), "-", false},
		"another name type first":             {handMadeHello(helloExtension{extensionServerName, u16([]byte{1}, u16([]byte("x")), []byte{0}, u16([]byte("a.test")))}), "a.test", false},
		"acme-tls/1 among others":             {handMadeHello(sni("a.test"), alpn("h2", "acme-tls/1")), "a.test", true},
		"an empty ALPN protocol":              {handMadeHello(alpn("h2", "")), "-", false},
		"an empty ALPN list":                  {handMadeHello(helloExtension{extensionALPN, u16()}), "-", false},
		"ALPN with bytes after its list":      {handMadeHello(helloExtension{extensionALPN, append(alpn("h2").data, 0)}), "-", false},
		"a repeated extension":                {handMadeHello(unknown(0x4000), sni("a.test"), unknown(0x4000)), "-", false},
		"30 unknown extensions":               {handMadeHello(append(thirty, sni("a.test"))...), "a.test", false},
		"30 unknown extensions, one repeated": {handMadeHello(append(thirty, sni("a.test"), unknown(0x4007))...), "-", false},
		"unknown extension with data":         {handMadeHello(unknown(0x4000, 1, 2, 3), sni("a.test")), "a.test", false},
		"early_data with data":                {handMadeHello(unknown(extensionEarlyData, 0)), "-", false},
		"pre_shared_key last":                 {handMadeHello(sni("a.test"), helloExtension{extensionPreSharedKey, bytes.Join([][]byte{u16(u16([]byte("ticket")), []byte{0, 0, 0, 1}), u16(u8(make([]byte, 32)))}, nil)}), "a.test", false},
		"pre_shared_key not last":             {handMadeHello(helloExtension{extensionPreSharedKey, bytes.Join([][]byte{u16(u16([]byte("ticket")), []byte{0, 0, 0, 1}), u16(u8(make([]byte, 32)))}, nil)}, sni("a.test")), "-", false},
		"an empty key share":                  {handMadeHello(helloExtension{extensionKeyShare, u16([]byte{0, 0x1d}, u16())}), "-", false},
		"odd supported_versions":              {handMadeHello(helloExtension{extensionSupportedVersions, u8([]byte{3, 4, 3})}), "-", false},
		"outer ECH":                           {handMadeHello(sni("public.test"), unknown(extensionEncryptedClientHello, append([]byte{0, 0, 1, 0, 1, 7}, append(u16(make([]byte, 32)), u16(make([]byte, 16))...)...)...)), "public.test", false},
		"outer ECH cut short":                 {handMadeHello(sni("public.test"), unknown(extensionEncryptedClientHello, 0, 0, 1, 0, 1, 7)), "-", false},
		"inner ECH":                           {handMadeHello(sni("a.test"), unknown(extensionEncryptedClientHello, 1)), "a.test", false},
		"inner ECH with more bytes":           {handMadeHello(sni("a.test"), unknown(extensionEncryptedClientHello, 1, 0)), "-", false},
		"unknown ECH type":                    {handMadeHello(sni("a.test"), unknown(extensionEncryptedClientHello, 2)), "-", false},
		"empty ECH":                           {handMadeHello(sni("a.test"), unknown(extensionEncryptedClientHello)), "a.test", false},
		"bytes after the hello":               {append(bytes.Clone(valid), "GET / HTTP/1.1\r\n"...), "a.example.com", false},
		"records of one byte":                 {records(recordTypeHandshake, valid[5:], 1), "a.example.com", false},
		"16 warning alerts first":             {append(bytes.Repeat(warning, 16), valid...), "a.example.com", false},
		"17 warning alerts first":             {append(bytes.Repeat(warning, 17), valid...), "-", false},
		"a warning between records":           {append(append(records(recordTypeHandshake, valid[5:25], 20), warning...), records(recordTypeHandshake, valid[25:], 100)...), "a.example.com", false},
		"a fatal alert":                       {append([]byte{recordTypeAlert, 3, 1, 0, 2, 2, 40}, valid...), "-", false},
		"close_notify":                        {append([]byte{recordTypeAlert, 3, 1, 0, 2, 1, 0}, valid...), "-", false},
		"an alert of three bytes":             {append([]byte{recordTypeAlert, 3, 1, 0, 3, 1, 112, 0}, valid...), "-", false},
		"an empty handshake record":           {append([]byte{recordTypeHandshake, 3, 1, 0, 0}, valid...), "-", false},
		"change_cipher_spec first":            {append([]byte{20, 3, 1, 0, 1, 1}, valid...), "-", false},
		"record version 0x1000":               {append([]byte{recordTypeHandshake, 0x10, 0}, valid[3:]...), "-", false},
		"SSLv2 framing":                       {[]byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0}, "-", false},
		"a record over 16 KiB":                {records(recordTypeHandshake, helloMessageBytes(sni("a.test"), unknown(0x4000, make([]byte, 16400)...)), 16385), "-", false},
		"a hello over 16 KiB in two records":  {handMadeHello(sni("a.test"), unknown(0x4000, make([]byte, 16400)...)), "a.test", false},
		"a message over 64 KiB":               {records(recordTypeHandshake, []byte{1, 1, 0, 1}, 100), "-", false},
		"not a ClientHello":                   {records(recordTypeHandshake, append([]byte{2}, valid[6:]...), 100), "-", false},
		"cut short":                           {valid[:len(valid)-1], "-", false},
		"cut in the record header":            {append(bytes.Repeat(warning, 1), 22, 3), "-", false},
		"a spare byte after the extensions":   {records(recordTypeHandshake, withSpareByte(helloMessageBytes(sni("a.test"))), 100), "-", false},
		"a spare byte, no extensions":         {records(recordTypeHandshake, withSpareByte(helloMessageBytes()), 100), "-", false},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := sameAsCryptoTLS(test.data); diff != "" {
				t.Error(diff)
			}
			hello, err := parseHello(test.data)
			switch {
			case test.serverName == "-" && err == nil:
				t.Errorf("parsed (%q), want refused", hello.serverName)
			case test.serverName != "-" && (err != nil || hello.serverName != test.serverName || hello.offers(acme.ALPNProto) != test.acme):
				t.Errorf("got %q (acme-tls/1 %v), %v; want %q (%v)", hello.serverName, hello.offers(acme.ALPNProto), err, test.serverName, test.acme)
			}
		})
	}
}

// FuzzParseHello: on any bytes, parseHello accepts what crypto/tls's server accepts, with the
// same server name and ALPN protocols, and refuses what it refuses.
func FuzzParseHello(f *testing.F) {
	for _, hello := range goClientHellos(f) {
		f.Add(hello)
		f.Add(fragmented(hello, 50))
	}
	f.Add(handMadeHello(sni("a.test"), alpn("h2", "acme-tls/1"), helloExtension{extensionPreSharedKey, bytes.Join([][]byte{u16(u16([]byte("t")), []byte{0, 0, 0, 1}), u16(u8(make([]byte, 32)))}, nil)}))
	f.Add(handMadeHello(sni("a.test"), helloExtension{extensionEncryptedClientHello, append([]byte{0, 0, 1, 0, 1, 7}, append(u16(make([]byte, 32)), u16(make([]byte, 16))...)...)}))
	f.Add(append([]byte{recordTypeAlert, 3, 1, 0, 2, 1, 112}, handMadeHello(sni("a.test"))...))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"))
	f.Add([]byte{0x80, 0x2e, 0x01, 0x03, 0x01})
	f.Add([]byte{22, 3, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if diff := sameAsCryptoTLS(data); diff != "" {
			t.Fatal(diff)
		}
	})
}

func BenchmarkParseHello(b *testing.B) {
	hello := clientHello(&tls.Config{ServerName: "p.example.com", CurvePreferences: []tls.CurveID{tls.X25519}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseHello(hello); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCryptoTLSHello is crypto/tls's parse of the same hello, for comparison.
func BenchmarkCryptoTLSHello(b *testing.B) {
	hello := clientHello(&tls.Config{ServerName: "p.example.com", CurvePreferences: []tls.CurveID{tls.X25519}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cryptoTLSHello(hello); err != nil {
			b.Fatal(err)
		}
	}
}
