package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// recentEvents is how many of a Certificate's latest Events status shows.
const recentEvents = 10

func newStatusCommand(p *plugin) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Explain a Certificate: spec, conditions, order and challenges, renewal, failures, events",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return p.status(cmd.Context(), args[0]) },
	}
}

func (p *plugin) getCertificate(ctx context.Context, name string) (client.Client, *certpilotv1alpha1.Certificate, error) {
	c, err := p.client()
	if err != nil {
		return nil, nil, err
	}
	namespace, err := p.namespace()
	if err != nil {
		return nil, nil, err
	}
	var certificate certpilotv1alpha1.Certificate
	if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &certificate); err != nil {
		return nil, nil, err
	}
	return c, &certificate, nil
}

func (p *plugin) status(ctx context.Context, name string) error {
	c, certificate, err := p.getCertificate(ctx, name)
	if err != nil {
		return err
	}
	colored, err := p.colored()
	if err != nil {
		return err
	}
	events, err := certificateEvents(ctx, c, certificate)
	if err != nil {
		// Events help but are not essential: a user who may read Certificates but not Events
		// still gets the rest.
		fmt.Fprintf(p.streams.ErrOut, "warning: listing events: %v\n", err)
	}
	return writeStatus(p.streams.Out, certificate, events, p.now(), colored)
}

func writeStatus(w io.Writer, certificate *certpilotv1alpha1.Certificate, events []eventsv1.Event, now time.Time, colored bool) error {
	var b strings.Builder
	field := func(indent int, name, format string, args ...any) {
		fmt.Fprintf(&b, "%s%-17s%s\n", strings.Repeat(" ", indent), name+":", fmt.Sprintf(format, args...))
	}
	spec, status := certificate.Spec, certificate.Status
	field(0, "Name", "%s", certificate.Name)
	field(0, "Namespace", "%s", certificate.Namespace)
	if len(spec.DNSNames) > 0 {
		field(0, "DNS names", "%s", strings.Join(spec.DNSNames, ", "))
	}
	if len(spec.IPAddresses) > 0 {
		field(0, "IP addresses", "%s", strings.Join(spec.IPAddresses, ", "))
	}
	field(0, "Issuer", "%s/%s", spec.IssuerRef.KindOrDefault(), spec.IssuerRef.Name)
	if len(spec.FallbackIssuerRefs) > 0 {
		var fallbacks []string
		for _, ref := range spec.FallbackIssuerRefs {
			fallbacks = append(fallbacks, ref.KindOrDefault()+"/"+ref.Name)
		}
		field(0, "Fallback issuers", "%s", strings.Join(fallbacks, ", "))
	}
	if current := status.CurrentIssuer; current != nil {
		moved := ""
		if current.Reason != "" {
			moved = "; moved on from the issuer before: " + current.Reason
		}
		field(0, "Issuing with", "%s/%s, %d failed attempts there%s", current.Kind, current.Name, current.FailedAttempts, moved)
	}
	field(0, "Secret", "%s", spec.SecretName)
	if spec.RenewBefore != nil {
		field(0, "Renew before", "%s", spec.RenewBefore.Duration)
	}
	if spec.PrivateKey != nil {
		field(0, "Private key", "%s %d", spec.PrivateKey.Algorithm, spec.PrivateKey.Size)
	}
	field(0, "Solver", "%s", solverSummary(spec.Solver))
	for _, named := range spec.Solvers {
		field(0, "Solver for "+strings.Join(named.Names(), ", "), "%s", solverSummary(&named.Solver))
	}

	b.WriteString("\nCertificate:\n")
	if status.NotAfter == nil {
		b.WriteString("  not issued yet\n")
	} else {
		left := daysLeft(status.NotAfter, now)
		leftText := left.text + " days left"
		if colored {
			leftText = left.color + leftText + ansiReset
		}
		if status.NotBefore != nil {
			field(2, "Not before", "%s", timestamp(status.NotBefore))
		}
		field(2, "Not after", "%s (%s, %s)", timestamp(status.NotAfter), relative(status.NotAfter.Time, now), leftText)
		if status.SerialNumber != "" {
			field(2, "Serial", "%s", status.SerialNumber)
		}
		if status.IssuerRef != nil {
			field(2, "Issued by", "%s/%s", status.IssuerRef.KindOrDefault(), status.IssuerRef.Name)
		}
	}
	if status.RenewalTime != nil {
		field(2, "Next renewal", "%s (%s)", timestamp(status.RenewalTime), relative(status.RenewalTime.Time, now))
		if status.RenewalTimeSource != "" {
			field(2, "Renewal chosen", "%s", map[string]string{
				"ari":      "ari (inside the CA's suggested window)",
				"fallback": "fallback (from the certificate's dates)",
			}[status.RenewalTimeSource])
		}
	}
	if info := status.RenewalInfo; info != nil {
		if info.WindowStart != nil && info.WindowEnd != nil {
			field(2, "CA's window", "%s to %s", timestamp(info.WindowStart), timestamp(info.WindowEnd))
		}
		if info.ExplanationURL != "" {
			field(2, "CA's reason", "%s", info.ExplanationURL)
		}
		if info.Error != "" {
			field(2, "Window fetch", "failed: %s", info.Error)
		}
		if info.NextFetch != nil {
			if info.NextFetch.Time.After(now) {
				field(2, "Next fetch", "%s (%s)", timestamp(info.NextFetch), relative(info.NextFetch.Time, now))
			} else {
				// Fetches that find the same window are not written.
				field(2, "Next fetch", "after %s (window unchanged since; later fetches are not written)", timestamp(info.NextFetch))
			}
		}
	}
	field(2, "Auto-renewable", "%s", optionalBool(status.AutoRenewable))

	b.WriteString("\nConditions:\n")
	if len(status.Conditions) == 0 {
		b.WriteString("  none yet\n")
	} else {
		rows := make([][]cell, 0, len(status.Conditions))
		for _, condition := range status.Conditions {
			rows = append(rows, []cell{
				{text: condition.Type}, {text: string(condition.Status)}, {text: condition.Reason},
				{text: relative(condition.LastTransitionTime.Time, now)}, {text: condition.Message},
			})
		}
		if err := writeIndentedTable(&b, []string{"TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"}, rows); err != nil {
			return err
		}
	}

	b.WriteString("\nOrder:\n")
	if status.Order == nil {
		b.WriteString("  none\n")
	} else {
		field(2, "URL", "%s", status.Order.URL)
		field(2, "State", "%s", orDash(status.Order.State))
		if len(status.Order.DNSNames) > 0 {
			field(2, "DNS names", "%s", strings.Join(status.Order.DNSNames, ", "))
		}
		if len(status.Order.IPAddresses) > 0 {
			field(2, "IP addresses", "%s", strings.Join(status.Order.IPAddresses, ", "))
		}
		b.WriteString("  Challenges:\n")
		if len(status.Order.Challenges) == 0 {
			b.WriteString("    none\n")
		} else {
			rows := make([][]cell, 0, len(status.Order.Challenges))
			for _, challenge := range status.Order.Challenges {
				rows = append(rows, []cell{
					{text: challenge.Identifier()}, {text: challenge.Type}, {text: orDash(challenge.State)}, {text: orDash(challenge.Reason)},
				})
			}
			var table strings.Builder
			if err := writeTable(&table, []string{"DNS NAME", "TYPE", "STATE", "REASON"}, rows, false); err != nil {
				return err
			}
			for _, line := range strings.SplitAfter(strings.TrimSuffix(table.String(), "\n"), "\n") {
				b.WriteString("    " + line)
			}
			b.WriteString("\n")
		}
	}

	b.WriteString("\nFailures:\n")
	field(2, "Attempts", "%d since the last success", status.FailedIssuanceAttempts)
	if status.LastFailureTime != nil {
		field(2, "Last failure", "%s (%s)", timestamp(status.LastFailureTime), relative(status.LastFailureTime.Time, now))
	}

	b.WriteString("\nEvents:\n")
	if len(events) == 0 {
		b.WriteString("  none\n")
	} else {
		rows := make([][]cell, 0, len(events))
		for _, event := range events {
			rows = append(rows, []cell{
				{text: relative(eventTime(&event), now)}, {text: event.Type}, {text: event.Reason}, {text: event.Note},
			})
		}
		if err := writeIndentedTable(&b, []string{"LAST SEEN", "TYPE", "REASON", "MESSAGE"}, rows); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeIndentedTable writes an uncoloured table indented by two spaces.
func writeIndentedTable(b *strings.Builder, header []string, rows [][]cell) error {
	var table strings.Builder
	if err := writeTable(&table, header, rows, false); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(strings.TrimSuffix(table.String(), "\n"), "\n") {
		b.WriteString("  " + line)
	}
	b.WriteString("\n")
	return nil
}

func solverSummary(solver *certpilotv1alpha1.Solver) string {
	switch {
	case solver == nil:
		return "the issuer's"
	case solver.TLSALPN01 != nil:
		return "tls-alpn-01 through load balancer " + loadBalancer(solver.TLSALPN01.LoadBalancer)
	case solver.HTTP01 != nil:
		return "http-01 through load balancer " + loadBalancer(solver.HTTP01.LoadBalancer)
	case solver.DNS01 != nil && solver.DNS01.Manual != nil:
		return "dns-01, manual (kubectl certpilot dns NAME shows the TXT records)"
	case solver.DNS01 != nil && solver.DNS01.Persist != nil:
		return "dns-persist-01 (kubectl certpilot dns NAME shows the records to set once)"
	case solver.DNS01 != nil && solver.DNS01.RFC2136 != nil:
		return "dns-01 through RFC 2136 at " + solver.DNS01.RFC2136.Nameserver
	case solver.DNS01 != nil:
		return "dns-01"
	}
	return "-"
}

func loadBalancer(ref certpilotv1alpha1.LoadBalancerRef) string {
	if ref.Namespace == "" {
		return "Deployment " + ref.Name
	}
	return "Deployment " + ref.Namespace + "/" + ref.Name
}

// certificateEvents returns the latest Events about certificate, oldest first.
func certificateEvents(ctx context.Context, c client.Client, certificate *certpilotv1alpha1.Certificate) ([]eventsv1.Event, error) {
	var list eventsv1.EventList
	if err := c.List(ctx, &list, client.InNamespace(certificate.Namespace),
		client.MatchingFields{"regarding.name": certificate.Name}); err != nil {
		return nil, err
	}
	var events []eventsv1.Event
	for _, event := range list.Items {
		if event.Regarding.Kind == "Certificate" && (event.Regarding.UID == "" || event.Regarding.UID == certificate.UID) {
			events = append(events, event)
		}
	}
	sort.SliceStable(events, func(i, j int) bool { return eventTime(&events[i]).Before(eventTime(&events[j])) })
	if len(events) > recentEvents {
		events = events[len(events)-recentEvents:]
	}
	return events, nil
}

// eventTime is when an event was last seen, whichever API wrote it.
func eventTime(event *eventsv1.Event) time.Time {
	switch {
	case event.Series != nil && !event.Series.LastObservedTime.IsZero():
		return event.Series.LastObservedTime.Time
	case !event.DeprecatedLastTimestamp.IsZero():
		return event.DeprecatedLastTimestamp.Time
	case !event.EventTime.IsZero():
		return event.EventTime.Time
	}
	return event.CreationTimestamp.Time
}

func timestamp(t *metav1.Time) string { return t.UTC().Format(time.RFC3339) }

// relative says "in 4d" or "3h ago".
func relative(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return "in " + duration.HumanDuration(t.Sub(now))
	}
	return duration.HumanDuration(now.Sub(t)) + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
