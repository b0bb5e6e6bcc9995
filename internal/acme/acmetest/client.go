package acmetest

import (
	"context"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
)

// NewClient returns an ACME client of the CA with a new ECDSA P-256 account key, registered
// with contact (none when empty).
func (ca *CA) NewClient(ctx context.Context, contact string) (*acme.Client, error) {
	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		return nil, err
	}
	client, err := acme.New(ctx, acme.Options{DirectoryURL: ca.DirectoryURL(), AccountKey: key, CABundle: ca.CABundle()})
	if err != nil {
		return nil, err
	}
	if _, err := client.Register(ctx, contact, nil); err != nil {
		return nil, err
	}
	return client, nil
}
