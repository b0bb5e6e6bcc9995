package main

import (
	"context"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// Days-left bands: red when expired, bright yellow under 3 days, yellow under 7, green otherwise.
const (
	urgentWithin  = 3 * 24 * time.Hour
	warningWithin = 7 * 24 * time.Hour
)

func newLsCommand(p *plugin) *cobra.Command {
	command := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List Certificates: subject, days left, ready, auto-renewable, secret",
		Long: "List Certificates with their subject (first DNS name), the days left until they expire, whether they are\n" +
			"Ready, whether certpilot renews them by itself (\"true (record expiring)\": a dns-persist-01 record's\n" +
			"persistuntil passes before the next renewal), and their Secret. Days left are red when expired, bright\n" +
			"yellow under 3 days, yellow under 7 and green otherwise (colour only on a terminal or with --color=always).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return p.ls(cmd.Context()) },
	}
	command.Flags().BoolVarP(&p.allNamespaces, "all-namespaces", "A", false, "List Certificates in every namespace.")
	return command
}

func (p *plugin) ls(ctx context.Context) error {
	colored, err := p.colored()
	if err != nil {
		return err
	}
	c, err := p.client()
	if err != nil {
		return err
	}
	var options []client.ListOption
	if !p.allNamespaces {
		namespace, err := p.namespace()
		if err != nil {
			return err
		}
		options = append(options, client.InNamespace(namespace))
	}
	var certificates certpilotv1alpha1.CertificateList
	if err := c.List(ctx, &certificates, options...); err != nil {
		return err
	}
	if len(certificates.Items) == 0 {
		_, err := p.streams.ErrOut.Write([]byte("No Certificates found.\n"))
		return err
	}
	sort.Slice(certificates.Items, func(i, j int) bool {
		a, b := certificates.Items[i], certificates.Items[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	header := []string{"NAME", "SUBJECT", "DAYS LEFT", "READY", "AUTO-RENEW", "SECRET"}
	if p.allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	now := p.now()
	rows := make([][]cell, 0, len(certificates.Items))
	for i := range certificates.Items {
		certificate := &certificates.Items[i]
		row := []cell{
			{text: certificate.Name},
			{text: subject(certificate)},
			daysLeft(certificate.Status.NotAfter, now),
			{text: readyStatus(certificate)},
			autoRenew(certificate),
			{text: certificate.Spec.SecretName},
		}
		if p.allNamespaces {
			row = append([]cell{{text: certificate.Namespace}}, row...)
		}
		rows = append(rows, row)
	}
	return writeTable(p.streams.Out, header, rows, colored)
}

// subject is the first DNS name, or for a certificate of IP addresses only its first address.
func subject(certificate *certpilotv1alpha1.Certificate) string {
	if names := certificate.Spec.Identifiers(); len(names) > 0 {
		return names[0]
	}
	return "-"
}

// daysLeft is the number of whole days until notAfter (negative once expired, rounded down so
// that "0" means under a day) and its colour band; "-" before the first issuance.
func daysLeft(notAfter *metav1.Time, now time.Time) cell {
	if notAfter == nil || notAfter.IsZero() {
		return cell{text: "-"}
	}
	left := notAfter.Sub(now)
	days := int(math.Floor(left.Hours() / 24))
	c := cell{text: strconv.Itoa(days)}
	switch {
	case left <= 0:
		c.color = ansiRed
	case left < urgentWithin:
		c.color = ansiBrightYellow
	case left < warningWithin:
		c.color = ansiYellow
	default:
		c.color = ansiGreen
	}
	return c
}

func readyStatus(certificate *certpilotv1alpha1.Certificate) string {
	condition := meta.FindStatusCondition(certificate.Status.Conditions, certpilotv1alpha1.ConditionReady)
	if condition == nil {
		return "Unknown"
	}
	return string(condition.Status)
}

// autoRenew is the AUTO-RENEW cell: true, false or "-", marked when a dns-persist-01 record
// stops validating (its persistuntil) before the next renewal.
func autoRenew(certificate *certpilotv1alpha1.Certificate) cell {
	c := cell{text: optionalBool(certificate.Status.AutoRenewable)}
	if meta.IsStatusConditionTrue(certificate.Status.Conditions, certpilotv1alpha1.ConditionPersistRecordExpiring) {
		c.text += " (record expiring)"
		c.color = ansiYellow
	}
	return c
}

func optionalBool(value *bool) string {
	if value == nil {
		return "-"
	}
	return strconv.FormatBool(*value)
}
