package reliability

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/testenv"
)

// fragment is the length of the runs of secret material searched for: long enough that a match
// is never chance (24 base64 characters are 144 bits), short enough to catch a truncated leak.
const fragment = 24

// secretFragments maps every fragment of secret material to where it comes from.
type secretFragments map[string]string

// add records every fragment-long run of text.
func (f secretFragments) add(text, origin string) {
	for i := 0; i+fragment <= len(text); i++ {
		f[text[i:i+fragment]] = origin
	}
}

// addBytes records raw secret bytes in the encodings a log line, a status or an Event could
// carry them in: base64 (standard and URL, padded or not), hex.
func (f secretFragments) addBytes(raw []byte, origin string) {
	f.add(base64.StdEncoding.EncodeToString(raw), origin)
	f.add(base64.RawURLEncoding.EncodeToString(raw), origin)
	f.add(hex.EncodeToString(raw), origin)
	f.add(strings.ToUpper(hex.EncodeToString(raw)), origin)
}

// addValue records a Secret value: each private key block (its DER, and the key's private
// numbers as a JWK or a debugger would print them), or, for a value that is not PEM, the
// value itself and what it decodes to.
func (f secretFragments) addValue(value []byte, origin string) {
	if bytes.Contains(value, []byte("-----BEGIN")) {
		rest := value
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if strings.Contains(block.Type, "PRIVATE KEY") {
				f.addBytes(block.Bytes, origin)
				for _, number := range privateNumbers(block.Bytes) {
					f.addBytes(number, origin+" (private numbers)")
				}
			}
		}
		// What is not a parsable block (a garbage "key") counts as text, without PEM armour.
		var text []string
		for _, line := range strings.Split(string(value), "\n") {
			if !strings.HasPrefix(line, "-----") {
				text = append(text, line)
			}
		}
		if joined := strings.Join(text, ""); !isBase64Of(joined, value) {
			f.add(joined[:min(len(joined), 4096)], origin)
		}
		return
	}
	text := strings.TrimSpace(string(value))
	f.add(text[:min(len(text), 4096)], origin)
	for _, encoding := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if raw, err := encoding.DecodeString(text); err == nil && len(raw) >= fragment/2 {
			f.addBytes(raw[:min(len(raw), 3072)], origin+" (decoded)")
		}
	}
}

// isBase64Of is true when text is only the base64 body of value's parsed blocks (already added).
func isBase64Of(text string, value []byte) bool {
	rest := value
	var bodies strings.Builder
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		bodies.WriteString(base64.StdEncoding.EncodeToString(block.Bytes))
	}
	return bodies.Len() > 0 && strings.TrimSpace(text) == bodies.String()
}

// privateNumbers returns a private key's secret numbers: the ECDSA scalar, RSA's d and primes,
// the Ed25519 seed.
func privateNumbers(der []byte) [][]byte {
	var key any
	var err error
	if key, err = x509.ParsePKCS8PrivateKey(der); err != nil {
		if key, err = x509.ParseECPrivateKey(der); err != nil {
			if key, err = x509.ParsePKCS1PrivateKey(der); err != nil {
				return nil
			}
		}
	}
	switch key := key.(type) {
	case *ecdsa.PrivateKey:
		raw, err := key.Bytes()
		if err != nil {
			return nil
		}
		return [][]byte{raw}
	case *rsa.PrivateKey:
		numbers := [][]byte{key.D.Bytes()}
		for _, prime := range key.Primes {
			numbers = append(numbers, prime.Bytes())
		}
		return append(numbers, new(big.Int).Set(key.Precomputed.Dp).Bytes())
	case ed25519.PrivateKey:
		return [][]byte{key.Seed()}
	}
	return nil
}

// hexDumpRow is one row of encoding/hex's Dump, the format client-go logs binary (protobuf)
// bodies in: offset, up to 16 bytes in hex, then the bytes as text between bars.
var hexDumpRow = regexp.MustCompile(`[0-9a-f]{8}  ((?:[0-9a-f]{2}  ?){1,16}) *\|`)

// undump returns the bytes of every hex dump in haystack (JSON-escaped newlines included), so
// that what a dump spreads over rows of 16 bytes is searched whole.
func undump(haystack string) string {
	var out strings.Builder
	for _, row := range hexDumpRow.FindAllStringSubmatch(strings.ReplaceAll(haystack, `\n`, "\n"), -1) {
		if raw, err := hex.DecodeString(strings.ReplaceAll(row[1], " ", "")); err == nil {
			out.Write(raw)
		}
	}
	return out.String()
}

// find returns where each fragment of the haystack comes from, at most a few.
func (f secretFragments) find(haystack string) []string {
	var found []string
	seen := map[string]bool{}
	for i := 0; i+fragment <= len(haystack) && len(found) < 5; i++ {
		if origin, ok := f[haystack[i:i+fragment]]; ok && !seen[origin] {
			seen[origin] = true
			start, end := max(0, i-60), min(len(haystack), i+fragment+60)
			found = append(found, fmt.Sprintf("%s, at …%q…", origin, haystack[start:end]))
		}
	}
	return found
}

// scanForSecrets reads back every Secret of namespaces (private keys the test created or the
// manager generated, EAB MAC keys, TSIG secrets, garbage the test passed off as keys) and fails
// when a fragment of one appears in anything the run produced: the manager's and the edge's
// output at their most verbose, every Event, every certpilot object (status included), the
// manager's /metrics.
func scanForSecrets(t *testing.T, s *testenv.Stack, namespaces []string) {
	t.Helper()
	ctx := context.Background()
	fragments := secretFragments{}
	var secrets int
	for _, namespace := range namespaces {
		var list corev1.SecretList
		if err := kube.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			t.Fatal(err)
		}
		for _, secret := range list.Items {
			// Challenge responses are public by design (http-01 key authorizations are served
			// to anyone): only their private keys count.
			challenges := secret.Labels[certpilotv1alpha1.LabelChallenges] == "true"
			for key, value := range secret.Data {
				if key == corev1.TLSCertKey || key == corev1.ServiceAccountRootCAKey {
					continue // certificates are public
				}
				if challenges && !bytes.Contains(value, []byte("PRIVATE KEY")) {
					continue
				}
				fragments.addValue(value, fmt.Sprintf("Secret %s/%s key %s", namespace, secret.Name, key))
			}
			secrets++
		}
	}
	if len(fragments) == 0 {
		t.Fatal("no secret material to look for")
	}
	// The scan itself works: a key block is found in its own Secret.
	var probe corev1.Secret
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: "good-tls"}, &probe); err != nil {
		t.Fatal(err)
	}
	if len(fragments.find(string(probe.Data[corev1.TLSPrivateKeyKey]))) == 0 {
		t.Fatal("the scan does not find a private key in the Secret that holds it")
	}
	if dumped, _ := json.Marshal(hex.Dump(probe.Data[corev1.TLSPrivateKeyKey])); len(fragments.find(undump(string(dumped)))) == 0 {
		t.Fatal("the scan does not find a private key in a JSON-logged hex dump of it")
	}

	haystacks := map[string]string{
		"manager output": s.Manager.Output(),
		"edge output":    s.Edge.Output(),
	}
	var events eventsv1.EventList
	if err := kube.Client.List(ctx, &events); err != nil {
		t.Fatal(err)
	}
	haystacks["Events"] = toJSON(t, events.Items)
	var certificates certpilotv1alpha1.CertificateList
	var issuers certpilotv1alpha1.IssuerList
	var clusterIssuers certpilotv1alpha1.ClusterIssuerList
	for _, list := range []client.ObjectList{&certificates, &issuers, &clusterIssuers} {
		if err := kube.Client.List(ctx, list); err != nil {
			t.Fatal(err)
		}
	}
	haystacks["Certificates"] = toJSON(t, certificates.Items)
	haystacks["Issuers and ClusterIssuers"] = toJSON(t, issuers.Items) + toJSON(t, clusterIssuers.Items)
	response, err := http.Get("http://" + s.MetricsAddress + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(response.Body)
	response.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	haystacks["/metrics"] = string(metrics)

	for what, haystack := range haystacks {
		if dumps := undump(haystack); dumps != "" {
			haystacks[what+" (hex dumps)"] = dumps
		}
	}
	var size int
	for what, haystack := range haystacks {
		size += len(haystack)
		if found := fragments.find(haystack); len(found) > 0 {
			t.Errorf("%s holds secret material:\n%s", what, strings.Join(found, "\n"))
		}
	}
	t.Logf("key scan: %d fragments of %d Secrets searched in %d kB (manager and edge output, %d Events, %d Certificates, %d issuers, /metrics)",
		len(fragments), secrets, size>>10, len(events.Items), len(certificates.Items), len(issuers.Items)+len(clusterIssuers.Items))
}

func toJSON(t *testing.T, value any) string {
	t.Helper()
	data, err := json.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
