package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
)

// SupportedAccountKeys names the account key types certpilot signs ACME requests with, for
// messages and documentation. They are exactly those golang.org/x/crypto/acme signs with (its
// jwsHasher), so every key that can register an account can also finalize an order, whose
// request certpilot signs itself (jws.go).
const SupportedAccountKeys = "RSA or ECDSA P-256, P-384 or P-521"

// CheckAccountKey returns a permanent error when key cannot sign ACME requests: anything but RSA
// and ECDSA on P-256, P-384 or P-521 (Ed25519, other curves, hardware keys of another type), and
// RSA under 2048 bits, which CAs refuse.
// Call it before registering an account: without it a key that x/crypto refuses fails with a
// generic error, and one that only this package refused used to register and then fail at every
// finalize. New calls it too.
func CheckAccountKey(key crypto.Signer) error {
	if key == nil {
		return permanent(errors.New("ACME account key is missing"))
	}
	if pub, ok := key.Public().(*rsa.PublicKey); ok && pub.N.BitLen() < minRSAAccountKeyBits {
		// CAs refuse them (Let's Encrypt: badPublicKey); Pebble accepts them, so refuse here.
		return permanent(fmt.Errorf("unsupported ACME account key: RSA of %d bits; use at least %d bits, or %s",
			pub.N.BitLen(), minRSAAccountKeyBits, SupportedAccountKeys))
	}
	_, _, err := jwsAlgorithm(key.Public())
	return err
}

// minRSAAccountKeyBits is the smallest RSA account key CheckAccountKey accepts, as Let's
// Encrypt's (Boulder's goodkey) policy does.
const minRSAAccountKeyBits = 2048

// jwsAlgorithm returns the JWS "alg" (RFC 7518 section 3.1) and the hash for an account key,
// the same choice x/crypto makes: RS256 for RSA of any size, ES256, ES384 and ES512 for ECDSA on
// P-256, P-384 and P-521.
func jwsAlgorithm(pub crypto.PublicKey) (string, crypto.Hash, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		return "RS256", crypto.SHA256, nil
	case *ecdsa.PublicKey:
		switch pub.Curve.Params().Name {
		case "P-256":
			return "ES256", crypto.SHA256, nil
		case "P-384":
			return "ES384", crypto.SHA384, nil
		case "P-521":
			return "ES512", crypto.SHA512, nil
		}
		return "", 0, permanent(fmt.Errorf("unsupported ACME account key: ECDSA on curve %s; use %s",
			pub.Curve.Params().Name, SupportedAccountKeys))
	default:
		return "", 0, permanent(fmt.Errorf("unsupported ACME account key type %s; use %s",
			keyTypeName(pub), SupportedAccountKeys))
	}
}

// keyTypeName names a public key's type for a message: "ed25519.PublicKey", "<nil>".
func keyTypeName(pub crypto.PublicKey) string {
	return strings.TrimPrefix(fmt.Sprintf("%T", pub), "*")
}
