package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// challengeTypeDNS01 is the ACME challenge type a dns-01 challenge has in status.
const challengeTypeDNS01 = "dns-01"

func newDNSCommand(p *plugin) *cobra.Command {
	return &cobra.Command{
		Use:   "dns NAME",
		Short: "Show the TXT records a dns-01 Certificate needs (manual dns-01: create them yourself)",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return p.dns(cmd.Context(), args[0]) },
	}
}

func (p *plugin) dns(ctx context.Context, name string) error {
	_, certificate, err := p.getCertificate(ctx, name)
	if err != nil {
		return err
	}
	var rows [][]cell
	if order := certificate.Status.Order; order != nil {
		for _, challenge := range order.Challenges {
			if challenge.Type != challengeTypeDNS01 {
				continue
			}
			rows = append(rows, []cell{
				{text: "_acme-challenge." + strings.TrimPrefix(challenge.DNSName, "*.")},
				{text: orDash(challenge.State)}, {text: orDash(challenge.Reason)},
			})
		}
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintf(p.streams.Out, "Certificate %s/%s: no dns-01 challenges\n", certificate.Namespace, certificate.Name)
		return err
	}
	return writeTable(p.streams.Out, []string{"TXT RECORD", "STATE", "RECORD / REASON"}, rows, false)
}
