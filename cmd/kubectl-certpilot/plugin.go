package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// Colour modes of --color.
const (
	colorAuto   = "auto"
	colorAlways = "always"
	colorNever  = "never"
)

// plugin holds what every subcommand shares: kubectl's connection flags, the streams and the
// clock (injectable, so days-left tests do not depend on the time they run at).
type plugin struct {
	configFlags   *genericclioptions.ConfigFlags
	streams       genericiooptions.IOStreams
	allNamespaces bool
	color         string
	now           func() time.Time
	// isTerminal tells whether w is a terminal; colour is on in auto mode only then.
	isTerminal func(w io.Writer) bool
}

func newPlugin(streams genericiooptions.IOStreams) *plugin {
	return &plugin{
		configFlags: genericclioptions.NewConfigFlags(true),
		streams:     streams,
		color:       colorAuto,
		now:         time.Now,
		isTerminal:  writerIsTerminal,
	}
}

func writerIsTerminal(w io.Writer) bool {
	file, ok := w.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

func newRootCommand(p *plugin) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-certpilot",
		Short: "Inspect and operate certpilot Certificates",
		Long: "kubectl certpilot shows what certificates are served, until when, and whether certpilot will renew them;\n" +
			"it explains a Certificate's order and challenges and requests renewals.",
		SilenceUsage: true,
		// cobra prints the error once; main only sets the exit code.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl certpilot"},
	}
	root.SetOut(p.streams.Out)
	root.SetErr(p.streams.ErrOut)
	p.configFlags.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&p.color, "color", colorAuto, "Colour the output: auto (when stdout is a terminal), always or never.")
	root.AddCommand(newLsCommand(p), newStatusCommand(p), newRenewCommand(p), newDNSCommand(p))
	return root
}

// client returns a client for the kubeconfig, context and flags kubectl would use.
func (p *plugin) client() (client.Client, error) {
	config, err := p.configFlags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	config.UserAgent = "kubectl-certpilot"
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, eventsv1.AddToScheme, certpilotv1alpha1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return client.New(config, client.Options{Scheme: scheme})
}

// namespace is the -n flag, else the kubeconfig context's namespace, else "default".
func (p *plugin) namespace() (string, error) {
	namespace, _, err := p.configFlags.ToRawKubeConfigLoader().Namespace()
	return namespace, err
}

// colored tells whether output gets ANSI colours.
func (p *plugin) colored() (bool, error) {
	switch p.color {
	case colorAlways:
		return true, nil
	case colorNever:
		return false, nil
	case colorAuto:
		return p.isTerminal(p.streams.Out), nil
	}
	return false, fmt.Errorf("--color must be auto, always or never, not %q", p.color)
}
