package controllers

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/pki"
)

// challengeVolumeName is the volume certpilot adds to a load balancer's pod template.
const challengeVolumeName = "certpilot-acme-challenges"

// loadBalancer returns the namespace and name of the solver's load balancer Deployment.
func (s *loadBalancerSolver) loadBalancer(run *certificateRun) (namespace, name string) {
	var ref certpilotv1alpha1.LoadBalancerRef
	switch {
	case s.source.spec.TLSALPN01 != nil:
		ref = s.source.spec.TLSALPN01.LoadBalancer
	case s.source.spec.HTTP01 != nil:
		ref = s.source.spec.HTTP01.LoadBalancer
	default:
		return "", ""
	}
	namespace = ref.Namespace
	if namespace == "" {
		namespace = run.cert.Namespace
		if s.source.fromIssuer && run.issuer.GetNamespace() != "" {
			namespace = run.issuer.GetNamespace()
		}
	}
	return namespace, ref.Name
}

// loadBalancerSolver answers tls-alpn-01 or http-01 through the load balancer that owns ports
// 443 and 80 for the names: it writes the responses into the load balancer's challenge Secret
// (the contract in api/v1alpha1/contract.go) and self-checks them as the CA's validator will.
type loadBalancerSolver struct {
	r      *CertificateReconciler
	typ    string // acme.ChallengeTLSALPN01 or acme.ChallengeHTTP01
	source solverSource
}

func (s *loadBalancerSolver) challengeType() string { return s.typ }

// key is the challenge Secret key of a response.
func (s *loadBalancerSolver) key(dnsName, token string) string {
	if s.typ == acme.ChallengeHTTP01 {
		return certpilotv1alpha1.HTTP01Key(token)
	}
	return certpilotv1alpha1.TLSALPN01Key(dnsName)
}

// present writes the responses into the load balancer's challenge Secret (adding only this
// certificate's keys: several certificates share the Secret) and makes sure the Deployment
// mounts it.
func (s *loadBalancerSolver) present(ctx context.Context, run *certificateRun, pending []pendingChallenge) error {
	r := s.r
	namespace, deployment := s.loadBalancer(run)
	secretName := certpilotv1alpha1.ChallengeSecretName(deployment)
	secret, err := r.challengeSecret(ctx, namespace, secretName)
	if err != nil {
		return err
	}

	// Responses are removed when the Certificate is deleted mid-order, too.
	if err := r.setFinalizer(ctx, run.cert, true); err != nil {
		return err
	}
	data := map[string][]byte{}
	for _, p := range pending {
		key := s.key(p.dnsName, p.challenge.Token)
		if s.typ == acme.ChallengeHTTP01 {
			if secret == nil || string(secret.Data[key]) != p.keyAuthorization {
				data[key] = []byte(p.keyAuthorization)
			}
			continue
		}
		if secret != nil && servesChallenge(secret.Data[key], p.dnsName, p.keyAuthorization) {
			continue // already published; regenerating would only churn the Secret
		}
		cert, err := run.acme.TLSALPN01Certificate(p.challenge.Token, p.dnsName)
		if err != nil {
			return err
		}
		encoded, err := encodeTLSCertificate(cert.Certificate, cert.PrivateKey.(crypto.Signer))
		if err != nil {
			return err
		}
		data[key] = encoded
	}

	if len(data) > 0 {
		if secret == nil {
			err = r.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: secretName, Labels: map[string]string{
					certpilotv1alpha1.LabelManagedBy:  certpilotv1alpha1.ManagedByValue,
					certpilotv1alpha1.LabelChallenges: "true",
				}},
				Type: corev1.SecretTypeOpaque,
				Data: data,
			})
		} else {
			err = r.patchSecretData(ctx, secret, data, nil)
		}
		if err != nil {
			return fmt.Errorf("publishing challenge responses in Secret %s/%s: %w", namespace, secretName, err)
		}
		ctrl.LoggerFrom(ctx).Info("Published challenge responses", "secret", namespace+"/"+secretName, "count", len(data))
	}
	return r.mountChallengeSecret(ctx, run, namespace, deployment, secretName)
}

// removeChallenges deletes this certificate's challenge responses, then the finalizer that
// guards them.
func (r *CertificateReconciler) removeChallenges(ctx context.Context, run *certificateRun) error {
	if run.cert.Status.Order != nil {
		challenges := r.challengesToClean(ctx, run)
		for _, solver := range r.allSolvers(run) {
			if err := solver.cleanup(ctx, run, challenges); err != nil {
				return err
			}
		}
	}
	return r.setFinalizer(ctx, run.cert, false)
}

// challengesToClean lists the challenges whose responses may be published: those in the status
// and, when the order is at hand, those the CA lists for it. The CA's list does not depend on a
// status write having landed (a reconcile may read a stale cache).
func (r *CertificateReconciler) challengesToClean(ctx context.Context, run *certificateRun) []certpilotv1alpha1.ChallengeStatus {
	challenges := slices.Clone(run.cert.Status.Order.Challenges)
	if run.order == nil || run.acme == nil {
		return challenges
	}
	for _, url := range run.order.AuthzURLs {
		authz, err := run.acme.GetAuthorization(ctx, url)
		if err != nil {
			continue
		}
		dnsName := authz.Identifier
		if authz.Wildcard {
			dnsName = "*." + dnsName
		}
		for _, challenge := range authz.Challenges {
			challenges = append(challenges, certpilotv1alpha1.ChallengeStatus{DNSName: dnsName, Type: challenge.Type, Token: challenge.Token})
		}
	}
	return challenges
}

// check verifies the response as the CA's validator will see it: a TLS handshake with ALPN
// acme-tls/1, or an HTTP GET of the token.
func (s *loadBalancerSolver) check(ctx context.Context, run *certificateRun, p pendingChallenge) error {
	if s.typ == acme.ChallengeHTTP01 {
		address := s.source.spec.HTTP01.ProbeAddress
		if address == "" {
			address = net.JoinHostPort(p.dnsName, "80")
		}
		return acme.CheckHTTP01(ctx, address, p.dnsName, p.challenge.Token, p.keyAuthorization)
	}
	address := s.source.spec.TLSALPN01.ProbeAddress
	if address == "" {
		address = net.JoinHostPort(p.dnsName, "443")
	}
	return acme.CheckTLSALPN01(ctx, address, p.dnsName, p.keyAuthorization)
}

func (s *loadBalancerSolver) notVisible(failures []string, pending int) (string, string) {
	return "SelfCheckFailed", fmt.Sprintf(
		"%d of %d challenge responses are not served by the load balancer yet; the CA is not asked to validate until they are (see status.order.challenges): %s",
		len(failures), pending, failures[0])
}

// cleanup removes the order's responses from the challenge Secret.
func (s *loadBalancerSolver) cleanup(ctx context.Context, run *certificateRun, challenges []certpilotv1alpha1.ChallengeStatus) error {
	r := s.r
	namespace, deployment := s.loadBalancer(run)
	if deployment == "" {
		return nil
	}
	secret, err := r.challengeSecret(ctx, namespace, certpilotv1alpha1.ChallengeSecretName(deployment))
	if err != nil || secret == nil {
		if _, ok := asStalled(err); ok {
			return nil // not ours to clean
		}
		return err
	}
	var remove []string
	for _, name := range run.cert.Status.Order.DNSNames {
		if key := certpilotv1alpha1.TLSALPN01Key(name); secret.Data[key] != nil {
			remove = append(remove, key)
		}
	}
	for _, challenge := range challenges {
		if key := certpilotv1alpha1.HTTP01Key(challenge.Token); challenge.Token != "" && secret.Data[key] != nil {
			remove = append(remove, key)
		}
	}
	if len(remove) == 0 {
		return nil
	}
	if err := r.patchSecretData(ctx, secret, nil, remove); err != nil {
		return fmt.Errorf("removing challenge responses from Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return nil
}

// challengeFinalizer keeps a Certificate with published challenge responses until they are
// removed from the shared challenge Secret.
const challengeFinalizer = "certpilot.dev/challenge-cleanup"

// setFinalizer adds or removes the challenge finalizer.
func (r *CertificateReconciler) setFinalizer(ctx context.Context, cert *certpilotv1alpha1.Certificate, present bool) error {
	return r.setNamedFinalizer(ctx, cert, challengeFinalizer, present)
}

// setNamedFinalizer adds or removes a finalizer with a patch of a copy, so the in-memory status
// being built is not replaced by the server's.
func (r *CertificateReconciler) setNamedFinalizer(ctx context.Context, cert *certpilotv1alpha1.Certificate, finalizer string, present bool) error {
	if controllerutil.ContainsFinalizer(cert, finalizer) == present {
		return nil
	}
	updated := cert.DeepCopy()
	if present {
		controllerutil.AddFinalizer(updated, finalizer)
	} else {
		controllerutil.RemoveFinalizer(updated, finalizer)
	}
	if err := r.Patch(ctx, updated, client.MergeFrom(cert)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("updating the finalizers of Certificate %s/%s: %w", cert.Namespace, cert.Name, err)
	}
	cert.Finalizers = updated.Finalizers
	return nil
}

// challengeSecret returns the load balancer's challenge Secret, nil when absent, and a stalled
// error when a Secret of that name is not certpilot's.
func (r *CertificateReconciler) challengeSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if secret.Labels[certpilotv1alpha1.LabelManagedBy] != certpilotv1alpha1.ManagedByValue {
		return nil, stalled("ChallengeSecretNotOwned",
			"Secret %s/%s exists and was not created by certpilot; certpilot never overwrites it", namespace, name)
	}
	return secret, nil
}

// patchSecretData adds and removes keys with a JSON merge patch, which touches only the named
// keys: other certificates' responses in the same Secret stay.
func (r *CertificateReconciler) patchSecretData(ctx context.Context, secret *corev1.Secret, add map[string][]byte, remove []string) error {
	data := map[string]any{}
	for key, value := range add {
		data[key] = value // []byte marshals as base64, as the API expects
	}
	for _, key := range remove {
		data[key] = nil
	}
	patch, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		return err
	}
	return r.Patch(ctx, secret, client.RawPatch(types.MergePatchType, patch))
}

// mountChallengeSecret makes the load balancer Deployment mount its challenge Secret, with
// server-side apply under certpilot's own field manager: tools that apply the Deployment
// server-side (Argo CD, Flux) keep their fields and do not fight certpilot. It is done once;
// a Deployment that already mounts the Secret is left alone.
func (r *CertificateReconciler) mountChallengeSecret(ctx context.Context, run *certificateRun, namespace, name, secretName string) error {
	deployment := &appsv1.Deployment{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, deployment); err != nil {
		if apierrors.IsNotFound(err) {
			return wait(selfCheckDelay(run), "LoadBalancerNotFound", "the load balancer Deployment %s/%s does not exist", namespace, name)
		}
		return err
	}
	for _, volume := range deployment.Spec.Template.Spec.Volumes {
		if volume.Name == challengeVolumeName {
			return nil
		}
	}
	podSpec := corev1ac.PodSpec().WithVolumes(corev1ac.Volume().WithName(challengeVolumeName).
		WithSecret(corev1ac.SecretVolumeSource().WithSecretName(secretName)))
	for _, container := range deployment.Spec.Template.Spec.Containers {
		podSpec.WithContainers(corev1ac.Container().WithName(container.Name).WithVolumeMounts(
			corev1ac.VolumeMount().WithName(challengeVolumeName).
				WithMountPath(certpilotv1alpha1.ChallengeVolumeMountPath).WithReadOnly(true)))
	}
	apply := appsv1ac.Deployment(name, namespace).WithSpec(appsv1ac.DeploymentSpec().
		WithTemplate(corev1ac.PodTemplateSpec().WithSpec(podSpec)))
	if err := r.Apply(ctx, apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("mounting Secret %s into Deployment %s/%s: %w", secretName, namespace, name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Mounted the challenge Secret into the load balancer", "deployment", namespace+"/"+name)
	return nil
}

// servesChallenge reports whether encoded (a challenge Secret value) is the challenge
// certificate for dnsName and keyAuthorization.
func servesChallenge(encoded []byte, dnsName, keyAuthorization string) bool {
	if len(encoded) == 0 {
		return false
	}
	block, _ := pem.Decode(encoded)
	if block == nil || block.Type != "CERTIFICATE" {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	return acme.VerifyTLSALPN01Certificate(cert, dnsName, keyAuthorization) == nil
}

// encodeTLSCertificate encodes a challenge certificate and its key as the contract says: the
// certificate PEM, then the private key PEM.
func encodeTLSCertificate(chain [][]byte, key crypto.Signer) ([]byte, error) {
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		return nil, err
	}
	return append(pki.EncodeChain(chain), keyPEM...), nil
}
