package source

import (
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// gatewayKind is the Gateway source: gateway.networking.k8s.io/v1 Gateways.
var gatewayKind = kind{
	Name:       "Gateway",
	APIVersion: gatewayv1.GroupVersion.String(),
	NewObject:  func() client.Object { return &gatewayv1.Gateway{} },
	NewList:    func() client.ObjectList { return &gatewayv1.GatewayList{} },
	Items: func(list client.ObjectList) []client.Object {
		items := list.(*gatewayv1.GatewayList).Items
		objects := make([]client.Object, len(items))
		for i := range items {
			objects[i] = &items[i]
		}
		return objects
	},
	Entries: func(obj client.Object) ([]tlsEntry, []problem) { return gatewayTLSEntries(obj.(*gatewayv1.Gateway)) },
}

// NewGatewayReconciler returns the reconciler of the Gateway source.
func NewGatewayReconciler(options Options) *Reconciler {
	return &Reconciler{Options: options, kind: gatewayKind}
}

// gatewayTLSEntries lists the Gateway's listeners that ask for a certificate (listenerTLSEntries).
func gatewayTLSEntries(gateway *gatewayv1.Gateway) ([]tlsEntry, []problem) {
	listeners := make([]listenerFields, len(gateway.Spec.Listeners))
	for i, l := range gateway.Spec.Listeners {
		listeners[i] = listenerFields{Name: l.Name, Hostname: l.Hostname, Protocol: l.Protocol, TLS: l.TLS}
	}
	return listenerTLSEntries("Gateway", gateway.Namespace, listeners)
}

// listenerFields are the fields of a listener certpilot reads; a Gateway's Listener and a
// ListenerSet's ListenerEntry have them alike.
type listenerFields struct {
	Name     gatewayv1.SectionName
	Hostname *gatewayv1.Hostname
	Protocol gatewayv1.ProtocolType
	TLS      *gatewayv1.ListenerTLSConfig
}

// listenerTLSEntries lists the listeners that ask for a certificate: protocol HTTPS or TLS, TLS
// mode Terminate (the default), a hostname, and a first certificateRef that is a Secret in the
// namespace of the Gateway or ListenerSet (ownerKind) that declares them. Listeners without a
// hostname or in Passthrough mode are not certpilot's to serve and are skipped silently; a
// listener whose first reference certpilot cannot write is a problem (certpilot never writes
// outside the namespace of the object that declares the listener, whatever a ReferenceGrant
// allows its implementation to read).
func listenerTLSEntries(ownerKind, namespace string, listeners []listenerFields) ([]tlsEntry, []problem) {
	var entries []tlsEntry
	var problems []problem
	for _, listener := range listeners {
		if listener.Protocol != gatewayv1.HTTPSProtocolType && listener.Protocol != gatewayv1.TLSProtocolType {
			continue
		}
		if listener.TLS == nil || (listener.TLS.Mode != nil && *listener.TLS.Mode != gatewayv1.TLSModeTerminate) {
			continue
		}
		if listener.Hostname == nil || *listener.Hostname == "" {
			continue
		}
		from := fmt.Sprintf("listener %q", listener.Name)
		if len(listener.TLS.CertificateRefs) == 0 {
			problems = append(problems, problem{Reason: reasonNoSecretName,
				Message: from + " has no tls.certificateRefs: no Certificate"})
			continue
		}
		ref := listener.TLS.CertificateRefs[0]
		if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
			problems = append(problems, problem{Reason: reasonUnsupportedRef, Message: fmt.Sprintf(
				"%s: the first tls.certificateRef is not a core Secret (group %q, kind %q): no Certificate",
				from, derefOr(ref.Group, ""), derefOr(ref.Kind, "Secret"))})
			continue
		}
		if ref.Namespace != nil && string(*ref.Namespace) != namespace {
			problems = append(problems, problem{Reason: reasonUnsupportedRef, Message: fmt.Sprintf(
				"%s: Secret %s is in namespace %s; certpilot writes only in the %s's namespace %s: no Certificate",
				from, ref.Name, *ref.Namespace, ownerKind, namespace)})
			continue
		}
		entries = append(entries, tlsEntry{From: from, SecretName: string(ref.Name), Hosts: []string{string(*listener.Hostname)}})
	}
	return entries, problems
}

func derefOr[T ~string](v *T, fallback string) string {
	if v == nil {
		return fallback
	}
	return string(*v)
}
