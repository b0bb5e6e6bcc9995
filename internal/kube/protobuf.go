package kube

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// Protobuf returns a copy of config whose requests and answers are Kubernetes protobuf, for
// clientsets of built-in kinds (Secrets): the apiserver encodes a watch event once per format,
// and protobuf is cheaper than JSON to encode and decode, above all for Secret data, which JSON
// carries in base64. controller-runtime's clients do the same for built-in kinds on their own;
// client-go's clientsets ask for JSON unless told. Not for custom resources, which the
// apiserver serves only as JSON.
func Protobuf(config *rest.Config) *rest.Config {
	config = rest.CopyConfig(config)
	config.ContentType = runtime.ContentTypeProtobuf
	config.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return config
}
