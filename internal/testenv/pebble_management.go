package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
)

// What a test asks a running Pebble: its log counters, its management interface (roots, ARI
// windows) and challtestsrv's DNS records.

// Output returns what both processes have written so far, each line prefixed with its name.
func (p *Pebble) Output() string { return p.output.String() }

// OrderCount returns how many orders Pebble has created so far (from its log).
func (p *Pebble) OrderCount() int {
	return strings.Count(p.output.String(), "Added order ")
}

// IssuedCount returns how many certificates Pebble has issued so far (from its log; across
// Restart, which keeps the log).
func (p *Pebble) IssuedCount() int {
	return strings.Count(p.output.String(), "Issued certificate serial ")
}

// Pause stops Pebble with SIGSTOP: it keeps its state, and its listeners accept connections
// that are never answered, as a CA that hangs. Resume continues it.
func (p *Pebble) Pause() error { return p.signalPebble(syscall.SIGSTOP) }

// Resume continues a paused Pebble (SIGCONT).
func (p *Pebble) Resume() error { return p.signalPebble(syscall.SIGCONT) }

func (p *Pebble) signalPebble(signal syscall.Signal) error {
	for _, proc := range p.procs {
		if proc.name == "pebble" {
			return proc.cmd.Process.Signal(signal)
		}
	}
	return fmt.Errorf("pebble is not running")
}

// ValidationAttempts returns how many times Pebble's validation authority has tried to validate
// a challenge for dnsName so far (from its log).
func (p *Pebble) ValidationAttempts(dnsName string) int {
	return strings.Count(p.output.String(), `Value:"`+dnsName+`"}, Challenge:`)
}

// DirectoryURL is the ACME directory URL.
func (p *Pebble) DirectoryURL() string { return "https://" + p.ListenAddress + "/dir" }

// HTTPClient returns an HTTP client that trusts CABundle, for Pebble's management interface.
func (p *Pebble) HTTPClient() *http.Client { return p.client }

// SetTXT adds a TXT record value for name (a trailing dot is optional) to challtestsrv's DNS.
// Values accumulate: setting two values for one name answers both, as a wildcard and its base
// domain need for dns-01.
func (p *Pebble) SetTXT(name, value string) error {
	return p.challengeManagement("/set-txt", map[string]string{"host": name, "value": value})
}

// ClearTXT removes every TXT record value of name.
func (p *Pebble) ClearTXT(name string) error {
	return p.challengeManagement("/clear-txt", map[string]string{"host": name})
}

// AddA makes challtestsrv's DNS answer A queries for host with ip instead of its default
// 127.0.0.1.
func (p *Pebble) AddA(host, ip string) error {
	return p.challengeManagement("/add-a", map[string]any{"host": host, "addresses": []string{ip}})
}

func (p *Pebble) challengeManagement(path string, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	url := "http://" + p.ChallengeManagementAddress + path
	res, err := p.client.Post(url, "application/json", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %w", path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		detail, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return fmt.Errorf("challtestsrv %s answered %s: %s", path, res.Status, bytes.TrimSpace(detail))
	}
	return nil
}

// Roots returns the PEM root certificate that signs issued certificates' chains. Pebble makes a
// new one at every start.
func (p *Pebble) Roots() ([]byte, error) { return p.managementGet("/roots/0") }

// Intermediates returns the PEM intermediate certificate that signs issued certificates.
func (p *Pebble) Intermediates() ([]byte, error) { return p.managementGet("/intermediates/0") }

func (p *Pebble) managementGet(path string) ([]byte, error) {
	res, err := p.client.Get("https://" + p.ManagementAddress + path)
	if err != nil {
		return nil, fmt.Errorf("Pebble management %s: %w", path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("Pebble management %s: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("Pebble management %s answered %s: %s", path, res.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// SetRenewalInfo makes Pebble's renewalInfo endpoint answer ariResponse (any JSON, valid or not)
// for the certificate certPEM, to drive ACME Renewal Information windows in tests.
func (p *Pebble) SetRenewalInfo(certPEM []byte, ariResponse string) error {
	data, err := json.Marshal(map[string]string{"certificate": string(certPEM), "ariResponse": ariResponse})
	if err != nil {
		return err
	}
	res, err := p.client.Post("https://"+p.ManagementAddress+"/set-renewal-info/", "application/json", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("Pebble management /set-renewal-info/: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		detail, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return fmt.Errorf("Pebble management /set-renewal-info/ answered %s: %s", res.Status, bytes.TrimSpace(detail))
	}
	return nil
}
