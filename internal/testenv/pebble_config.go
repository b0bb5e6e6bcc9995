package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// The files RunPebble writes before it starts Pebble: its serving certificate and its JSON
// configuration.

// writeServingCertificate creates a throwaway CA and, signed by it, the certificate Pebble serves
// its directory and management interface with (127.0.0.1, ::1, localhost, and ListenHost when it
// is not loopback). Generating it keeps the harness independent of the test certificates inside
// Pebble's module.
func (p *Pebble) writeServingCertificate(dir string) (certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certpilot test Pebble HTTPS CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		return "", "", fmt.Errorf("creating Pebble's HTTPS CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if host, _, err := net.SplitHostPort(p.ListenAddress); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
			template.IPAddresses = append(template.IPAddresses, ip)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, key.Public(), caKey)
	if err != nil {
		return "", "", fmt.Errorf("creating Pebble's HTTPS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile = filepath.Join(dir, "pebble-https.pem")
	keyFile = filepath.Join(dir, "pebble-https.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}

	p.CABundle = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	p.client = &http.Client{Transport: transport, Timeout: 10 * time.Second}
	return certFile, keyFile, nil
}

// pebbleConfig is Pebble's JSON configuration file, limited to what the harness sets.
type pebbleConfig struct {
	Pebble struct {
		ListenAddress                  string                       `json:"listenAddress"`
		ManagementListenAddress        string                       `json:"managementListenAddress"`
		Certificate                    string                       `json:"certificate"`
		PrivateKey                     string                       `json:"privateKey"`
		HTTPPort                       int                          `json:"httpPort"`
		TLSPort                        int                          `json:"tlsPort"`
		ExternalAccountBindingRequired bool                         `json:"externalAccountBindingRequired"`
		ExternalAccountMACKeys         map[string]string            `json:"externalAccountMACKeys,omitempty"`
		Profiles                       map[string]pebbleProfileJSON `json:"profiles"`
		RetryAfter                     struct {
			Authz int `json:"authz"`
			Order int `json:"order"`
		} `json:"retryAfter"`
	} `json:"pebble"`
}

type pebbleProfileJSON struct {
	Description    string `json:"description"`
	ValidityPeriod uint64 `json:"validityPeriod"` // seconds
}

func writePebbleConfig(path string, p *Pebble, opts PebbleOptions, certFile, keyFile string) error {
	var config pebbleConfig
	c := &config.Pebble
	c.ListenAddress = p.ListenAddress
	c.ManagementListenAddress = p.ManagementAddress
	c.Certificate = certFile
	c.PrivateKey = keyFile
	c.HTTPPort = p.HTTPPort
	c.TLSPort = p.TLSPort
	c.ExternalAccountBindingRequired = opts.ExternalAccountBindingRequired
	c.ExternalAccountMACKeys = opts.ExternalAccountMACKeys
	c.Profiles = map[string]pebbleProfileJSON{
		"default": {Description: "The default profile", ValidityPeriod: seconds(opts.DefaultValidity)},
	}
	for name, profile := range opts.Profiles {
		c.Profiles[name] = pebbleProfileJSON{Description: profile.Description, ValidityPeriod: seconds(profile.ValidityPeriod)}
	}
	// One second, Pebble's smallest, keeps polling clients fast.
	c.RetryAfter.Authz = 1
	c.RetryAfter.Order = 1
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(d.Round(time.Second) / time.Second)
}
