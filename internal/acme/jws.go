package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"
)

// postJWS sends payload to url as a JWS signed by the account key in "kid" form (RFC 8555
// section 6.2), for the requests x/crypto only offers bundled with waiting (finalize) or not at
// all (ARI's "replaces"). Its nonces come from the Client's own pool (nonces.go), else from
// newNonce, since x/crypto's pool is unexported; it replays immediately after a badNonce, with
// the fresh nonce the rejection carried, as x/crypto does (see replayBadNonceOnly).
//
// The caller closes the response body; a non-2xx response is returned as is, for the caller to
// turn into a problem.
func (c *Client) postJWS(ctx context.Context, url string, payload any) (*http.Response, error) {
	kid, err := c.kid(ctx)
	if err != nil {
		return nil, err
	}
	payloadJSON, err := json.Marshal(payload)
	if err != nil {
		return nil, err
	}
	return c.postSigned(ctx, kid, url, payloadJSON)
}

// postAsGet fetches url with a POST-as-GET (RFC 8555 section 6.3): a JWS over an empty payload.
func (c *Client) postAsGet(ctx context.Context, url string) (*http.Response, error) {
	kid, err := c.kid(ctx)
	if err != nil {
		return nil, err
	}
	return c.postSigned(ctx, kid, url, []byte{})
}

// postSigned signs payloadJSON (empty for POST-as-GET) and sends it, replaying after badNonce.
func (c *Client) postSigned(ctx context.Context, kid, url string, payloadJSON []byte) (*http.Response, error) {
	nonce, ok := c.nonces.take(time.Now())
	if !ok {
		var err error
		if nonce, err = c.fetchNonce(ctx); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		body, err := signJWS(c.acme.Key, kid, nonce, url, payloadJSON)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/jose+json")
		req.Header.Set("User-Agent", c.userAgentHeader())
		res, err := c.httpClient.Do(req)
		if err != nil {
			return nil, err
		}
		next := res.Header.Get("Replay-Nonce")
		if res.StatusCode != http.StatusBadRequest || attempt >= maxBadNonceReplays {
			c.nonces.put(next, time.Now())
			return res, nil
		}
		err = problem(res)
		res.Body.Close()
		if ProblemType(err) != "badNonce" || next == "" {
			c.nonces.put(next, time.Now())
			return nil, err
		}
		nonce = next
	}
}

// maxBadNonceReplays matches the replays replayBadNonceOnly allows x/crypto.
const maxBadNonceReplays = 3

func (c *Client) userAgentHeader() string {
	if c.userAgent == "" {
		return "certpilot"
	}
	return c.userAgent + " certpilot"
}

// kid returns the account URL, looking it up once when neither Options nor Register gave it.
func (c *Client) kid(ctx context.Context) (string, error) {
	if uri := c.AccountURI(); uri != "" {
		return uri, nil
	}
	account, err := c.acme.GetReg(ctx, "")
	if err != nil {
		return "", failf(err, "looking up the ACME account")
	}
	if err := c.origin.checkURL("an account URL", account.URI); err != nil {
		return "", err
	}
	c.setAccountURI(account.URI)
	return account.URI, nil
}

func (c *Client) fetchNonce(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.directory.NonceURL, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", c.userAgentHeader())
	res, err := c.httpClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching a nonce: %w", err)
	}
	defer res.Body.Close()
	nonce := res.Header.Get("Replay-Nonce")
	if nonce == "" {
		if res.StatusCode >= 300 {
			return "", fmt.Errorf("fetching a nonce: %w", problem(res))
		}
		return "", errors.New("fetching a nonce: the server sent no Replay-Nonce")
	}
	return nonce, nil
}

// signJWS returns the flattened JSON serialization of a JWS over payload.
func signJWS(key crypto.Signer, kid, nonce, url string, payload []byte) ([]byte, error) {
	alg, hash, err := jwsAlgorithm(key.Public())
	if err != nil {
		return nil, err
	}
	protected, err := json.Marshal(struct {
		Alg   string `json:"alg"`
		KID   string `json:"kid"`
		Nonce string `json:"nonce"`
		URL   string `json:"url"`
	}{alg, kid, nonce, url})
	if err != nil {
		return nil, err
	}
	encode := base64.RawURLEncoding.EncodeToString
	signingInput := encode(protected) + "." + encode(payload)
	digest := hash.New()
	digest.Write([]byte(signingInput))
	signature, err := key.Sign(rand.Reader, digest.Sum(nil), hash)
	if err != nil {
		return nil, fmt.Errorf("signing ACME request: %w", err)
	}
	if pub, ok := key.Public().(*ecdsa.PublicKey); ok {
		// crypto.Signer returns ASN.1 DER; JWS wants r and s as fixed-size big-endian integers.
		if signature, err = ecdsaJWSSignature(signature, (pub.Curve.Params().BitSize+7)/8); err != nil {
			return nil, err
		}
	}
	return json.Marshal(struct {
		Protected string `json:"protected"`
		Payload   string `json:"payload"`
		Signature string `json:"signature"`
	}{encode(protected), encode(payload), encode(signature)})
}

func ecdsaJWSSignature(der []byte, size int) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil {
		return nil, fmt.Errorf("decoding ECDSA signature: %w", err)
	}
	// The signer may be an HSM or a KMS: refuse what FillBytes would panic on or mis-encode.
	if len(rest) != 0 || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > 8*size || sig.S.BitLen() > 8*size {
		return nil, fmt.Errorf("decoding ECDSA signature: r or s is not a positive integer of at most %d bytes", size)
	}
	out := make([]byte, 2*size)
	sig.R.FillBytes(out[:size])
	sig.S.FillBytes(out[size:])
	return out, nil
}
