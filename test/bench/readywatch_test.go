package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

// readinessView is the part of a Certificate the benchmark's watch reads. The watch shares the
// machine's cores with certpilot while it issues: decoding only these fields (encoding/json
// skips the rest) costs a fraction of decoding whole objects, managed fields and all.
type readinessView struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Status struct {
		SerialNumber string `json:"serialNumber"`
		Conditions   []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

// ready reports whether the Certificate is Ready with a certificate.
func (v *readinessView) ready() bool {
	if v.Status.SerialNumber == "" {
		return false
	}
	for _, c := range v.Status.Conditions {
		if c.Type == certpilotv1alpha1.ConditionReady {
			return c.Status == "True"
		}
	}
	return false
}

// watchEvent is one line of a watch response.
type watchEvent struct {
	Type   string        `json:"type"`
	Object readinessView `json:"object"`
}

// watchReady lists and watches the namespace's Certificates until ctx ends, telling ready about
// every one it sees; when the watch ends it lists again and resumes.
func watchReady(ctx context.Context, config *rest.Config, namespace string, ready *readiness) {
	config = rest.CopyConfig(config)
	config.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	config.UserAgent = rest.DefaultKubernetesUserAgent() // counted with the benchmark's other requests
	c, err := rest.UnversionedRESTClientFor(config)
	if err != nil {
		panic(err)
	}
	path := fmt.Sprintf("/apis/%s/namespaces/%s/certificates", certpilotv1alpha1.GroupVersion.String(), namespace)
	for ctx.Err() == nil {
		version, err := listReady(ctx, c, path, ready)
		if err != nil {
			_ = sleep(ctx, time.Second)
			continue
		}
		ready.syncOnce.Do(func() { close(ready.synced) })
		_ = followReady(ctx, c, path, version, ready)
	}
}

// listReady lists the Certificates at path into ready and returns the list's resourceVersion.
func listReady(ctx context.Context, c rest.Interface, path string, ready *readiness) (string, error) {
	body, err := c.Get().AbsPath(path).SetHeader("Accept", "application/json").Stream(ctx)
	if err != nil {
		return "", err
	}
	defer body.Close()
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []readinessView `json:"items"`
	}
	if err := json.NewDecoder(body).Decode(&list); err != nil {
		return "", err
	}
	now := time.Now()
	for i := range list.Items {
		ready.observe(list.Items[i].Metadata.Name, list.Items[i].ready(), now)
	}
	return list.Metadata.ResourceVersion, nil
}

// followReady reads the watch of path from version into ready until it ends.
func followReady(ctx context.Context, c rest.Interface, path, version string, ready *readiness) error {
	body, err := c.Get().AbsPath(path).Param("watch", "1").Param("resourceVersion", version).
		SetHeader("Accept", "application/json").Stream(ctx)
	if err != nil {
		return err
	}
	defer body.Close()
	decoder := json.NewDecoder(body)
	for {
		var event watchEvent
		if err := decoder.Decode(&event); err != nil {
			return err
		}
		if event.Type == "ERROR" {
			return fmt.Errorf("watch error")
		}
		ready.observe(event.Object.Metadata.Name, event.Object.ready(), time.Now())
	}
}
