package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/dns01"
)

// Challenge types as they appear in status.
const (
	challengeTypeDNS01        = "dns-01"
	challengeTypeDNSPersist01 = "dns-persist-01"
)

func newDNSCommand(p *plugin) *cobra.Command {
	return &cobra.Command{
		Use:   "dns NAME",
		Short: "Show the TXT records a DNS-validated Certificate needs (dns01 manual, or the dns-persist-01 records to set once)",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return p.dns(cmd.Context(), args[0]) },
	}
}

// persistRecordText finds, in a status message, the dns-persist-01 records it asks for: "TXT
// record <name> [at <server>] with the value <quoted>" or "... must be updated to the value
// <quoted>" (internal/solver/persist.go writes them).
var persistRecordText = regexp.MustCompile(`TXT record (_validation-persist\.\S+) (?:at \S+ )?(?:with|must be updated to) the value ("(?:[^"\\]|\\.)*")`)

// persistRecords returns the zone file lines of the dns-persist-01 records messages ask for,
// one per record name, in order of first mention.
func persistRecords(messages ...string) []string {
	var names, lines []string
	for _, message := range messages {
		for _, match := range persistRecordText.FindAllStringSubmatch(message, -1) {
			value, err := strconv.Unquote(match[2])
			if err != nil || slices.Contains(names, match[1]) {
				continue
			}
			names = append(names, match[1])
			lines = append(lines, dns01.ZoneFileLine(match[1], value, dns01.PersistTTL))
		}
	}
	return lines
}

func (p *plugin) dns(ctx context.Context, name string) error {
	_, certificate, err := p.getCertificate(ctx, name)
	if err != nil {
		return err
	}
	var rows [][]cell
	var messages []string
	if order := certificate.Status.Order; order != nil {
		for _, challenge := range order.Challenges {
			var record string
			switch challenge.Type {
			case challengeTypeDNS01:
				record = "_acme-challenge." + strings.TrimPrefix(challenge.DNSName, "*.")
			case challengeTypeDNSPersist01:
				record = strings.TrimSuffix(dns01.PersistRecordName(challenge.DNSName), ".")
				messages = append(messages, challenge.Reason)
			default:
				continue
			}
			rows = append(rows, []cell{{text: record}, {text: orDash(challenge.State)}, {text: orDash(challenge.Reason)}})
		}
	}
	// Before an order (a record to update), only the conditions name the records.
	for _, condition := range certificate.Status.Conditions {
		if condition.Type == certpilotv1alpha1.ConditionReconciling || condition.Type == certpilotv1alpha1.ConditionStalled {
			messages = append(messages, condition.Message)
		}
	}
	lines := persistRecords(messages...)
	if len(rows) == 0 && len(lines) == 0 {
		_, err := fmt.Fprintf(p.streams.Out, "Certificate %s/%s: no dns-01 or dns-persist-01 challenges\n", certificate.Namespace, certificate.Name)
		return err
	}
	if len(rows) > 0 {
		if err := writeTable(p.streams.Out, []string{"TXT RECORD", "STATE", "RECORD / REASON"}, rows, false); err != nil {
			return err
		}
	}
	if len(lines) > 0 {
		if len(rows) > 0 {
			fmt.Fprintln(p.streams.Out)
		}
		fmt.Fprintf(p.streams.Out, "; dns-persist-01 records to set once in the zone (certpilot then issues and renews by itself):\n")
		for _, line := range lines {
			fmt.Fprintln(p.streams.Out, line)
		}
	}
	return nil
}
