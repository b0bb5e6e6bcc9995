package edge

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/edge/edgetest"
)

// helloConn is a client connection that sends data and then ends; it reports whether anyone
// read on after data ran out.
type helloConn struct {
	net.Conn
	data        []byte
	chunk       int // bytes per Read; 0: as many as asked
	readPastEnd bool
}

func (c *helloConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		c.readPastEnd = true
		return 0, io.EOF
	}
	if c.chunk > 0 && len(p) > c.chunk {
		p = p[:c.chunk]
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *helloConn) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }

// captureConn records what a TLS client writes and ends the handshake at its first read.
type captureConn struct {
	net.Conn
	written bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error) { return c.written.Write(p) }
func (c *captureConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *captureConn) Close() error                { return nil }

// clientHello returns the ClientHello crypto/tls sends for config.
func clientHello(config *tls.Config) []byte {
	conn := &captureConn{}
	_ = tls.Client(conn, config).Handshake()
	return conn.written.Bytes()
}

// fragmented re-frames the handshake messages of TLS records into records of at most size
// bytes each, as a client (or a middlebox) may.
func fragmented(records []byte, size int) []byte {
	var payload []byte
	for len(records) >= 5 {
		n := int(binary.BigEndian.Uint16(records[3:5]))
		if len(records) < 5+n {
			break
		}
		payload = append(payload, records[5:5+n]...)
		records = records[5+n:]
	}
	var out []byte
	for chunk := range slices.Chunk(payload, size) {
		out = append(out, 22, 3, 1, byte(len(chunk)>>8), byte(len(chunk)))
		out = append(out, chunk...)
	}
	return out
}

// readHelloBounded runs readClientHello on conn and fails t when it does not return within a
// second: with the whole input already there, nothing may wait.
func readHelloBounded(t *testing.T, conn net.Conn) (*tls.ClientHelloInfo, []byte, error) {
	t.Helper()
	type result struct {
		hello  *tls.ClientHelloInfo
		prefix []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		hello, prefix, err := readClientHello(conn, new(bytes.Buffer))
		done <- result{hello, prefix, err}
	}()
	select {
	case r := <-done:
		return r.hello, r.prefix, r.err
	case <-time.After(time.Second):
		t.Fatal("readClientHello did not return within a second of its input ending")
		return nil, nil, nil
	}
}

// FuzzReadClientHello checks the passthrough listener's ClientHello peek on any bytes a client
// sends: it returns at once, records exactly a prefix of what it read, never asks for more
// once it has a hello, and the recorded prefix alone (what the upstream is sent) holds the same
// hello, however the client split it into reads.
func FuzzReadClientHello(f *testing.F) {
	for _, config := range []*tls.Config{
		{ServerName: "www.example.com"},
		{ServerName: "www.example.com", NextProtos: []string{"acme-tls/1"}, MaxVersion: tls.VersionTLS12},
		{ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS13},
		{NextProtos: []string{"acme-tls/1"}},
	} {
		hello := clientHello(config)
		f.Add(hello)
		f.Add(fragmented(hello, 64))
		f.Add(append(bytes.Clone(hello), "GET / HTTP/1.1\r\n"...))
	}
	f.Add([]byte("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"))
	f.Add([]byte{0x80, 0x2e, 0x01, 0x03, 0x01}) // an SSLv2-framed hello
	f.Add([]byte{22, 3, 1, 0xff, 0xff})         // a record header that promises more than comes
	f.Fuzz(func(t *testing.T, data []byte) {
		conn := &helloConn{data: bytes.Clone(data)}
		hello, prefix, err := readHelloBounded(t, conn)
		if !bytes.HasPrefix(data, prefix) {
			t.Fatalf("recorded %d bytes that are not a prefix of the %d sent", len(prefix), len(data))
		}
		if hello == nil {
			if err == nil {
				t.Fatal("no hello and no error")
			}
			return
		}
		if conn.readPastEnd {
			t.Fatal("read on after the ClientHello had arrived")
		}
		_ = offersACMETLS(hello)
		sameHello := func(how string, other *tls.ClientHelloInfo, err error) {
			t.Helper()
			if other == nil {
				t.Fatalf("%s: no hello (%v)", how, err)
			}
			if other.ServerName != hello.ServerName || !slices.Equal(other.SupportedProtos, hello.SupportedProtos) ||
				!slices.Equal(other.CipherSuites, hello.CipherSuites) || !slices.Equal(other.SupportedVersions, hello.SupportedVersions) {
				t.Fatalf("%s: hello for %q %v, first read %q %v", how, other.ServerName, other.SupportedProtos, hello.ServerName, hello.SupportedProtos)
			}
		}
		replayed, _, err := readHelloBounded(t, &helloConn{data: prefix})
		sameHello("replaying the recorded prefix", replayed, err)
		byteByByte, _, err := readHelloBounded(t, &helloConn{data: bytes.Clone(data), chunk: 1})
		sameHello("reading one byte at a time", byteByByte, err)
	})
}

// FuzzChallengeEntry checks the parsing of one challenge Secret entry (a key and its bytes, as
// the load balancer contract lays them out): an entry is served only as what its key says (a
// tls-alpn-01 certificate naming exactly that name, with a critical acmeIdentifier, or a
// non-empty key authorization), a second identical update parses nothing, and the error for a
// bad entry never repeats its private key nor an http-01 token.
func FuzzChallengeEntry(f *testing.F) {
	account := edgetest.NewAccount(f)
	challenge := account.ChallengeCertificatePEM(f, "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", "www.example.com")
	ordinary := edgetest.CertificatePEM(f, edgetest.SelfSignedCertificate(f, "www.example.com"))
	token := "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	f.Add(v1alpha1.TLSALPN01Key("www.example.com"), challenge)
	f.Add("tls-alpn-01.WWW.Example.com.pem", challenge)
	f.Add(v1alpha1.TLSALPN01Key("other.example.com"), challenge)
	f.Add(v1alpha1.TLSALPN01Key("www.example.com"), ordinary)
	f.Add(v1alpha1.TLSALPN01Key("www.example.com"), challenge[:len(challenge)-40])
	f.Add(v1alpha1.HTTP01Key(token), []byte(account.KeyAuthorization(f, token)+"\n"))
	f.Add(v1alpha1.HTTP01Key(token), []byte(" \n"))
	f.Add("tls.crt", ordinary)
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		store := NewChallengeStore()
		changed, err := store.Replace(map[string][]byte{key: value})
		if !changed {
			t.Fatal("the first update of an empty store changed nothing")
		}
		challengeType, name, ok := v1alpha1.ParseChallengeKey(key)
		if err != nil {
			var entryErr *EntryError
			if !errors.As(err, &entryErr) {
				t.Fatalf("Replace error %T, want *EntryError", err)
			}
			message := err.Error()
			if leak := secretLeak(message, value, key); leak != "" {
				t.Fatalf("entry error %q repeats private key bytes %q", message, leak)
			}
			if ok && challengeType == challengeTypeHTTP01 {
				template := (&EntryError{Key: v1alpha1.HTTP01Key("-"), Err: entryErr.Err}).Error()
				if strings.Contains(message, name) && !strings.Contains(template, name) {
					t.Fatalf("entry error %q names the http-01 token", message)
				}
			}
		}
		tlsALPN01, http01 := store.Len()
		switch {
		case err == nil && ok && challengeType == challengeTypeTLSALPN01:
			certificate, found := store.ChallengeCertificate(name)
			if !found || tlsALPN01 != 1 || http01 != 0 {
				t.Fatalf("accepted tls-alpn-01 entry %q not served (%d, %d)", key, tlsALPN01, http01)
			}
			leaf := certificate.Leaf
			if leaf == nil || len(leaf.DNSNames) != 1 || !strings.EqualFold(leaf.DNSNames[0], name) {
				t.Fatalf("entry %q serves a certificate for %v", key, leaf.DNSNames)
			}
			if !slices.ContainsFunc(leaf.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(idPeACMEIdentifier) && e.Critical }) {
				t.Fatalf("entry %q serves a certificate without a critical acmeIdentifier", key)
			}
		case err == nil && ok && challengeType == challengeTypeHTTP01:
			keyAuthorization, found := store.KeyAuthorization(name)
			if !found || keyAuthorization == "" || keyAuthorization != strings.TrimSpace(string(value)) || tlsALPN01 != 0 || http01 != 1 {
				t.Fatalf("accepted http-01 entry served as %q, %v", keyAuthorization, found)
			}
		case err == nil:
			t.Fatalf("Replace accepted %q, which is not a challenge key", key)
		default:
			if tlsALPN01+http01 != 0 {
				t.Fatalf("a refused entry is served (%d, %d)", tlsALPN01, http01)
			}
		}
		if changed, again := store.Replace(map[string][]byte{key: bytes.Clone(value)}); changed || again != nil {
			t.Fatalf("the same update again: changed %v, error %v", changed, again)
		}
	})
}

// FuzzParseBundle checks the parsers of certificate Secret contents (bundle.pem, tls.crt with
// tls.key, Kontena's SSL_CERTS): what they accept has its leaf parsed and matching the key, and
// survives re-encoding; their errors never repeat private key bytes.
func FuzzParseBundle(f *testing.F) {
	leaf := edgetest.SelfSignedCertificate(f, "www.example.com", "example.com")
	other := edgetest.SelfSignedCertificate(f, "api.example.com")
	chain, key := edgetest.ChainPEM(leaf), edgetest.KeyPEM(f, leaf)
	f.Add(append(bytes.Clone(key), chain...))
	f.Add(append(bytes.Clone(chain), key...))
	f.Add(append(append(bytes.Clone(key), edgetest.ChainPEM(other)...), chain...))
	f.Add(append(edgetest.CertificatePEM(f, leaf), edgetest.CertificatePEM(f, other)...))
	f.Add(append(bytes.Clone(key), edgetest.KeyPEM(f, other)...))
	f.Add(append(edgetest.KeyPEM(f, other), chain...))
	f.Add(chain)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAccepted := func(what string, certificate *tls.Certificate) {
			t.Helper()
			if certificate.Leaf == nil || len(certificate.Certificate) == 0 || !bytes.Equal(certificate.Leaf.Raw, certificate.Certificate[0]) {
				t.Fatalf("%s: the leaf is not parsed from the first certificate", what)
			}
			public, ok := certificate.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
			signer, isSigner := certificate.PrivateKey.(crypto.Signer)
			if !ok || !isSigner || !public.Equal(signer.Public()) {
				t.Fatalf("%s: the key is not the leaf's", what)
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(certificate.PrivateKey)
			if err != nil {
				t.Fatalf("%s: re-encoding the key: %v", what, err)
			}
			var encoded []byte
			for _, der := range certificate.Certificate {
				encoded = append(encoded, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
			}
			encoded = append(encoded, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
			again, err := ParseBundle(encoded)
			if err != nil {
				t.Fatalf("%s: parsing the re-encoded bundle: %v", what, err)
			}
			if !slices.EqualFunc(again.Certificate, certificate.Certificate, bytes.Equal) {
				t.Fatalf("%s: the chain changed in the round trip", what)
			}
		}
		checkError := func(what string, err error) {
			t.Helper()
			if leak := secretLeak(err.Error(), data); leak != "" {
				t.Fatalf("%s: error %q repeats private key bytes %q", what, err, leak)
			}
		}
		if certificate, err := ParseBundle(data); err != nil {
			checkError("ParseBundle", err)
		} else {
			checkAccepted("ParseBundle", certificate)
		}
		certificates, err := ParseBundles(data)
		if err != nil {
			checkError("ParseBundles", err)
		}
		for _, certificate := range certificates {
			checkAccepted("ParseBundles", certificate)
		}
		for what, files := range map[string]map[string][]byte{
			"tls.crt and tls.key": {secretCertificateKey: data, secretPrivateKeyKey: data},
			"bundle.pem":          {secretBundleKey: data},
		} {
			certificate, found, err := certificateFromFiles(files)
			switch {
			case !found && len(data) > 0:
				t.Fatalf("%s: not recognised as a certificate Secret", what)
			case err != nil:
				checkError(what, err)
			case found:
				checkAccepted(what, certificate)
			}
		}
	})
}

// TestParseBundleManyCertificates is FuzzParseBundle's bound on time at a size the fuzzer does
// not reach: a certificate Secret near the 1 MiB limit, a key and a thousand certificates none
// of which is its own, is refused at once (it took 13 s when each certificate was tried as the
// leaf with the whole chain re-parsed).
func TestParseBundleManyCertificates(t *testing.T) {
	key := edgetest.KeyPEM(t, edgetest.SelfSignedCertificate(t, "www.example.com"))
	other := edgetest.ChainPEM(edgetest.SelfSignedCertificate(t, "api.example.com"))
	bundle := append(bytes.Clone(key), bytes.Repeat(other, 1000)...)
	started := time.Now()
	if _, err := ParseBundle(bundle); err == nil {
		t.Fatal("ParseBundle accepted a key without its certificate")
	}
	if elapsed := time.Since(started); elapsed > 2*time.Second {
		t.Fatalf("ParseBundle took %v for a %d KiB bundle of 1,000 certificates", elapsed, len(bundle)>>10)
	}
	// The same bundle with the key's own certificate last: found by its key, served first.
	own := edgetest.SelfSignedCertificate(t, "www.example.com")
	bundle = append(append(edgetest.KeyPEM(t, own), bytes.Repeat(other, 1000)...), edgetest.ChainPEM(own)...)
	started = time.Now()
	certificate, err := ParseBundle(bundle)
	if err != nil || !bytes.Equal(certificate.Certificate[0], own.Certificate[0]) || len(certificate.Certificate) != 1001 {
		t.Fatalf("ParseBundle did not put the key's own certificate first: %v", err)
	}
	if elapsed := time.Since(started); elapsed > 2*time.Second {
		t.Fatalf("ParseBundle took %v for a %d KiB bundle of 1,001 certificates", elapsed, len(bundle)>>10)
	}
}

// secretLeakMin is the shortest run of private key material secretLeak reports: long enough that
// an error's own words never match by chance.
const secretLeakMin = 24

// secretLeak returns a run of at least secretLeakMin characters of message that repeats a private
// key block of input: its base64 body (as %s or %q of the PEM shows it), its DER bytes raw or in
// hex (as %x shows them); "" when there is none. Runs that also occur in public (Secret key
// names) or in input outside its private key blocks (a certificate, a block type) are not
// reported.
func secretLeak(message string, input []byte, public ...string) string {
	var secrets []string
	rest, outside := input, string(input)
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") || len(block.Bytes) == 0 {
			continue
		}
		secrets = append(secrets, base64.StdEncoding.EncodeToString(block.Bytes), string(block.Bytes), hex.EncodeToString(block.Bytes))
		outside = strings.ReplaceAll(outside, string(pem.EncodeToMemory(block)), "")
	}
	public = append(public, outside)
	for i := 0; i+secretLeakMin <= len(message); i++ {
		run := message[i : i+secretLeakMin]
		if slices.ContainsFunc(public, func(p string) bool { return strings.Contains(p, run) }) {
			continue
		}
		if slices.ContainsFunc(secrets, func(s string) bool { return strings.Contains(s, run) }) {
			return run
		}
	}
	return ""
}
