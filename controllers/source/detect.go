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
// it logs once that the source is off and asks discovery every interval. Discovery needs no
// permission beyond what every authenticated client has.
func SetupGatewayWhenServed(mgr ctrl.Manager, options Options, interval time.Duration) error {
	client, err := discovery.NewDiscoveryClientForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	return mgr.Add(&gatewayDetector{
		served:   func() (bool, error) { return gatewaysServed(client) },
		interval: interval,
		setup: func(ctx context.Context) error {
			return NewGatewayReconciler(options).SetupWithManager(ctx, mgr)
		},
	})
}

// gatewayDetector is a manager runnable that runs setup once the Gateway API is served.
type gatewayDetector struct {
	served   func() (bool, error)
	interval time.Duration
	setup    func(ctx context.Context) error
}

// NeedLeaderElection is false: every replica sets the controller up; the controller itself
// waits for the leader election.
func (d *gatewayDetector) NeedLeaderElection() bool { return false }

// Start waits until the Gateway API is served, then sets the Gateway source up and returns.
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
				log.Info("The Gateway API CRDs were installed: the Gateway source is on", "groupVersion", gatewayv1.GroupVersion.String())
			} else {
				log.Info("The Gateway source is on", "groupVersion", gatewayv1.GroupVersion.String())
			}
			return d.setup(ctx)
		case !off:
			off = true
			log.Info("The Gateway API CRDs are not installed: the Gateway source is off until they are",
				"groupVersion", gatewayv1.GroupVersion.String(), "checkInterval", d.interval.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// gatewaysServed reports whether discovery lists gateways in gateway.networking.k8s.io/v1.
func gatewaysServed(client discovery.DiscoveryInterface) (bool, error) {
	resources, err := client.ServerResourcesForGroupVersion(gatewayv1.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, resource := range resources.APIResources {
		if resource.Name == "gateways" {
			return true, nil
		}
	}
	return false, nil
}
