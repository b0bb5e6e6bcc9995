package v1alpha1

// Keys of the certificate Secret written for spec.keystores and spec.additionalOutputFormats
// (the names cert-manager uses, so workloads moving from it find the same files).
const (
	// PKCS12KeystoreKey holds the private key, the leaf and the intermediates as PKCS#12.
	PKCS12KeystoreKey = "keystore.p12"
	// PKCS12TruststoreKey holds the certificates of ca.crt as a PKCS#12 trust store.
	PKCS12TruststoreKey = "truststore.p12"
	// JKSKeystoreKey holds the private key, the leaf and the intermediates as a Java KeyStore.
	JKSKeystoreKey = "keystore.jks"
	// JKSTruststoreKey holds the certificates of ca.crt as a Java KeyStore of trusted entries.
	JKSTruststoreKey = "truststore.jks"
	// DERKeyKey holds the private key as DER (PKCS#8).
	DERKeyKey = "key.der"
	// CombinedPEMKey holds the private key followed by the leaf and the intermediates as PEM.
	CombinedPEMKey = "tls-combined.pem"
)

// OutputKeys are every key spec.keystores and spec.additionalOutputFormats may write: the keys
// certpilot removes from the certificate Secret when the spec no longer asks for them.
var OutputKeys = []string{PKCS12KeystoreKey, PKCS12TruststoreKey, JKSKeystoreKey, JKSTruststoreKey, DERKeyKey, CombinedPEMKey}

// CertificateKeystores are the keystores written into the certificate Secret.
type CertificateKeystores struct {
	// PKCS12 writes "keystore.p12" (private key, leaf, intermediates) and, when ca.crt is not
	// empty, "truststore.p12" (the certificates of ca.crt).
	// +optional
	PKCS12 *PKCS12Keystore `json:"pkcs12,omitempty"`

	// JKS writes "keystore.jks" (one private key entry: key, leaf, intermediates) and, when
	// ca.crt is not empty, "truststore.jks" (a trusted certificate entry per certificate of
	// ca.crt, aliases "ca", "ca-1", ...).
	// +optional
	JKS *JKSKeystore `json:"jks,omitempty"`
}

// PKCS#12 profiles: the algorithms a keystore is encrypted and authenticated with.
const (
	// PKCS12ProfileModern2023: PBES2 with PBKDF2-HMAC-SHA-256 and AES-256-CBC, HMAC-SHA-256 MAC.
	// Read by OpenSSL 1.1.1 and later, Java 12 and later, Windows Server 2019 and later.
	PKCS12ProfileModern2023 = "Modern2023"
	// PKCS12ProfileLegacyDES: 3DES for keys and certificates, HMAC-SHA-1 MAC; read almost
	// everywhere.
	PKCS12ProfileLegacyDES = "LegacyDES"
	// PKCS12ProfileLegacyRC2: 40-bit RC2 for certificates, 3DES for keys, HMAC-SHA-1 MAC; what
	// OpenSSL before 3.0 and old Java wrote. OpenSSL 3 reads it only with -legacy.
	PKCS12ProfileLegacyRC2 = "LegacyRC2"
	// PKCS12ProfilePasswordless: no encryption and no MAC, no password.
	PKCS12ProfilePasswordless = "Passwordless"
)

// PKCS12Keystore asks for the certificate as PKCS#12.
// +kubebuilder:validation:XValidation:rule="!self.create || (has(self.profile) && self.profile == 'Passwordless') || has(self.passwordSecretRef)",message="keystores.pkcs12.passwordSecretRef is required: name the Secret key that holds the password, or set profile: Passwordless for a keystore without one"
// +kubebuilder:validation:XValidation:rule="!(has(self.profile) && self.profile == 'Passwordless') || !has(self.passwordSecretRef)",message="keystores.pkcs12 with profile Passwordless takes no passwordSecretRef"
type PKCS12Keystore struct {
	// Create writes the PKCS#12 keystore; false is the same as no pkcs12 entry.
	// +required
	Create bool `json:"create"`

	// PasswordSecretRef names the key of a Secret, in the Certificate's namespace, whose value
	// (as it is: a trailing newline is part of the password) encrypts the keystore and the
	// trust store. Required unless the profile is Passwordless. The Secret is read when the
	// keystore is written; certpilot does not watch it, so a new password is used at the next
	// reconcile (at the latest 10 minutes after a missing password is reported).
	// +optional
	PasswordSecretRef *SecretKeySelector `json:"passwordSecretRef,omitempty"`

	// Profile is the set of algorithms: Modern2023 (default; AES-256 and SHA-256), LegacyDES
	// (3DES and SHA-1, for old readers), LegacyRC2 (RC2 and SHA-1, as OpenSSL before 3.0 and
	// cert-manager's default; OpenSSL 3 reads it only with -legacy) or Passwordless (no
	// encryption, no MAC, no passwordSecretRef: only for a Secret that is itself the
	// protection, like tls.key beside it).
	// +optional
	// +kubebuilder:default=Modern2023
	// +kubebuilder:validation:Enum=Modern2023;LegacyDES;LegacyRC2;Passwordless
	Profile string `json:"profile,omitempty"`
}

// JKSKeystore asks for the certificate as a Java KeyStore.
// +kubebuilder:validation:XValidation:rule="!self.create || has(self.passwordSecretRef)",message="keystores.jks.passwordSecretRef is required: a Java KeyStore always has a password"
type JKSKeystore struct {
	// Create writes the Java keystore; false is the same as no jks entry.
	// +required
	Create bool `json:"create"`

	// PasswordSecretRef names the key of a Secret, in the Certificate's namespace, whose value
	// (ASCII, as it is: a trailing newline is part of the password) protects the keystore, its
	// private key entry and the trust store. Read and used like pkcs12's.
	// +optional
	PasswordSecretRef *SecretKeySelector `json:"passwordSecretRef,omitempty"`

	// Alias of the private key entry in keystore.jks. Java KeyStore aliases are lowercase.
	// +optional
	// +kubebuilder:default=certificate
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$')",message="keystores.jks.alias: lowercase letters, digits, '-', '.' and '_' (Java KeyStore aliases are lowercase), starting and ending with a letter or digit"
	Alias string `json:"alias,omitempty"`
}

// Additional output formats.
const (
	// OutputFormatDER writes the private key as DER (PKCS#8) into "key.der".
	OutputFormatDER = "DER"
	// OutputFormatCombinedPEM writes the private key, the leaf and the intermediates as one PEM
	// into "tls-combined.pem".
	OutputFormatCombinedPEM = "CombinedPEM"
)

// CertificateAdditionalOutputFormat is one more format of the certificate in its Secret.
type CertificateAdditionalOutputFormat struct {
	// Type is DER ("key.der": the private key as PKCS#8 DER) or CombinedPEM
	// ("tls-combined.pem": the private key, the leaf and the intermediates in one PEM, as
	// bundle.pem).
	// +required
	// +kubebuilder:validation:Enum=DER;CombinedPEM
	Type string `json:"type"`
}
