package source

import (
	"fmt"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ingressKind is the Ingress source: networking.k8s.io/v1 Ingresses.
var ingressKind = kind{
	Name:       "Ingress",
	APIVersion: networkingv1.SchemeGroupVersion.String(),
	NewObject:  func() client.Object { return &networkingv1.Ingress{} },
	NewList:    func() client.ObjectList { return &networkingv1.IngressList{} },
	Items: func(list client.ObjectList) []client.Object {
		items := list.(*networkingv1.IngressList).Items
		objects := make([]client.Object, len(items))
		for i := range items {
			objects[i] = &items[i]
		}
		return objects
	},
	Entries: func(obj client.Object) ([]tlsEntry, []problem) { return ingressTLSEntries(obj.(*networkingv1.Ingress)) },
}

// NewIngressReconciler returns the reconciler of the Ingress source.
func NewIngressReconciler(options Options) *Reconciler {
	return &Reconciler{Options: options, kind: ingressKind}
}

// ingressTLSEntries lists the Ingress's spec.tls[] entries; an entry without a secretName or
// without hosts is a problem.
func ingressTLSEntries(ingress *networkingv1.Ingress) ([]tlsEntry, []problem) {
	var entries []tlsEntry
	var problems []problem
	for i, tls := range ingress.Spec.TLS {
		from := fmt.Sprintf("spec.tls[%d]", i)
		switch {
		case tls.SecretName == "":
			problems = append(problems, problem{Reason: reasonNoSecretName, Message: from + " has no secretName: no Certificate"})
		case len(tls.Hosts) == 0:
			problems = append(problems, problem{Reason: reasonNoHosts, Message: from + " has no hosts: no Certificate"})
		default:
			entries = append(entries, tlsEntry{From: from, SecretName: tls.SecretName, Hosts: tls.Hosts})
		}
	}
	return entries, problems
}
