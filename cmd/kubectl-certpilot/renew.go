package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

func newRenewCommand(p *plugin) *cobra.Command {
	return &cobra.Command{
		Use:   "renew NAME",
		Short: "Request a renewal now (sets the " + certpilotv1alpha1.AnnotationRenew + " annotation to the current time)",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return p.renew(cmd.Context(), args[0]) },
	}
}

func (p *plugin) renew(ctx context.Context, name string) error {
	c, certificate, err := p.getCertificate(ctx, name)
	if err != nil {
		return err
	}
	requested := p.now().UTC().Format(time.RFC3339)
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{certpilotv1alpha1.AnnotationRenew: requested}},
	})
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, certificate, client.RawPatch(client.Merge.Type(), patch)); err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.streams.Out, "Certificate %s/%s: renewal requested (%s=%s)\n",
		certificate.Namespace, certificate.Name, certpilotv1alpha1.AnnotationRenew, requested)
	return err
}
