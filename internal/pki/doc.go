// Package pki makes the keys, certificate signing requests and PEM files certpilot writes into
// Secrets, and answers the questions a controller asks about an existing certificate: which key
// it carries, which names it covers, and whether a private key belongs to it.
//
// It has no Kubernetes or ACME imports; everything is plain crypto/x509 and encoding/pem.
package pki
