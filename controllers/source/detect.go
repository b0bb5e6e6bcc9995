package source

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	ctrl "sigs.k8s.io/controller-runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GatewayAPICheckInterval is how often the manager asks the API's discovery whether the
// Gateway API CRDs have been installed, until they are.
const GatewayAPICheckInterval = 10 * time.Second

// SetupGatewayWhenServed sets the Gateway source up at once when the apiserver serves
// gateway.networking.k8s.io/v1 Gateways, and otherwise as soon as it does, without a restart:
// it logs once that the source is off and asks discovery every interval. The ListenerSet source
// follows the same way, once ListenerSets are served too (their CRD is in the Gateway API's
// standard channel since v1.5; a cluster may have Gateways without it). Discovery needs no
// permission beyond what every authenticated client has.
func SetupGatewayWhenServed(mgr ctrl.Manager, options Options, interval time.Duration) error {
	client, err := discovery.NewDiscoveryClientForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	err = mgr.Add(&gatewayDetector{
		served:   func() (bool, error) { return gatewayAPIServed(client, "gateways") },
		interval: interval,
		messages: gatewayMessages,
		setup: func(ctx context.Context) error {
			return NewGatewayReconciler(options).SetupWithManager(ctx, mgr)
		},
	})
	if err != nil {
		return err
	}
	return mgr.Add(&gatewayDetector{
		served:   func() (bool, error) { return gatewayAPIServed(client, "gateways", "listenersets") },
		interval: interval,
		messages: listenerSetMessages,
		setup: func(ctx context.Context) error {
			return NewListenerSetReconciler(options).SetupWithManager(ctx, mgr)
		},
	})
}

// detectorMessages are what a detector logs: the source is on at start, came on later, is off.
type detectorMessages struct{ on, turnedOn, off string }

var (
	gatewayMessages = detectorMessages{
		on:       "The Gateway source is on",
		turnedOn: "The Gateway API CRDs were installed: the Gateway source is on",
		off:      "The Gateway API CRDs are not installed: the Gateway source is off until they are",
	}
	listenerSetMessages = detectorMessages{
		on:       "The ListenerSet source is on",
		turnedOn: "The ListenerSet CRD was installed: the ListenerSet source is on",
		off:      "The ListenerSet CRD is not installed: ListenerSets are not read until it is",
	}
)

// gatewayDetector is a manager runnable that runs setup once the Gateway API resources it needs
// are served.
type gatewayDetector struct {
	served   func() (bool, error)
	interval time.Duration
	messages detectorMessages
	setup    func(ctx context.Context) error
}

// NeedLeaderElection is false: every replica sets the controller up; the controller itself
// waits for the leader election.
func (d *gatewayDetector) NeedLeaderElection() bool { return false }

// Start waits until the resources are served, then sets the source up and returns.
func (d *gatewayDetector) Start(ctx context.Context) error {
	log := ctrl.Log.WithName("gateway-source")
	ticker := time.NewTicker(d.interval)
	defer ticker.Stop()
	off := false
	for {
		served, err := d.served()
		switch {
		case err != nil:
			log.V(1).Info("Asking discovery for the Gateway API failed; asking again", "error", err.Error())
		case served:
			if off {
				log.Info(d.messages.turnedOn, "groupVersion", gatewayv1.GroupVersion.String())
			} else {
				log.Info(d.messages.on, "groupVersion", gatewayv1.GroupVersion.String())
			}
			return d.setup(ctx)
		case !off:
			off = true
			log.Info(d.messages.off, "groupVersion", gatewayv1.GroupVersion.String(), "checkInterval", d.interval.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// gatewayAPIServed reports whether discovery lists every one of resources in
// gateway.networking.k8s.io/v1.
func gatewayAPIServed(client discovery.DiscoveryInterface, resources ...string) (bool, error) {
	list, err := client.ServerResourcesForGroupVersion(gatewayv1.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	served := map[string]bool{}
	for _, resource := range list.APIResources {
		served[resource.Name] = true
	}
	for _, resource := range resources {
		if !served[resource] {
			return false, nil
		}
	}
	return true, nil
}
