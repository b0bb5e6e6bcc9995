package controllers

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	certpilotv1alpha1 "github.com/certpilot/certpilot/api/v1alpha1"
)

func TestPlanInjection(t *testing.T) {
	source := injectSource{certificate: "web", secretName: "web-tls", serial: "abc123"}
	workload := certpilotv1alpha1.InjectedWorkload{Kind: "Deployment", Name: "web"}
	live := func(containers ...corev1.Container) *corev1.PodTemplateSpec {
		return &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers}}
	}
	app := corev1.Container{Name: "app"}
	sidecar := corev1.Container{Name: "sidecar"}
	envRef := `{"name":"SSL_CERTS","valueFrom":{"secretKeyRef":{"name":"web-tls","key":"bundle.pem"}}}`
	volume := `"volumes":[{"name":"certpilot-web","secret":{"secretName":"web-tls","items":[{"key":"tls.crt","path":"tls.crt"},{"key":"tls.key","path":"tls.key"},{"key":"ca.crt","path":"ca.crt"},{"key":"bundle.pem","path":"bundle.pem"}]}}]`
	ownedEnv := corev1ac.PodTemplateSpec().WithSpec(corev1ac.PodSpec().WithContainers(
		corev1ac.Container().WithName("app").WithEnv(corev1ac.EnvVar().WithName("SSL_CERTS"))))

	tests := map[string]struct {
		entries      []certpilotv1alpha1.InjectTarget
		live         *corev1.PodTemplateSpec
		owned        *corev1ac.PodTemplateSpecApplyConfiguration
		want         string // JSON of the planned template; "" means nothing
		wantProblems []string
	}{
		"env rolls by default": {
			entries: []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", Env: "SSL_CERTS"}},
			live:    live(app),
			want:    `{"metadata":{"annotations":{"certpilot.dev/serial-web":"abc123"}},"spec":{"containers":[{"name":"app","env":[` + envRef + `]}]}}`,
		},
		"env without rollout": {
			entries: []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", Env: "SSL_CERTS", Rollout: "Never"}},
			live:    live(app),
			want:    `{"spec":{"containers":[{"name":"app","env":[` + envRef + `]}]}}`,
		},
		"mount does not roll by default, into every container": {
			entries: []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", MountPath: "/tls"}},
			live:    live(app, sidecar),
			want: `{"spec":{` + volume + `,"containers":[{"name":"app","volumeMounts":[{"name":"certpilot-web","readOnly":true,"mountPath":"/tls"}]},` +
				`{"name":"sidecar","volumeMounts":[{"name":"certpilot-web","readOnly":true,"mountPath":"/tls"}]}]}}`,
		},
		"mount with rollout Always, one container": {
			entries: []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", MountPath: "/tls", Container: "sidecar", Rollout: "Always"}},
			live:    live(app, sidecar),
			want: `{"metadata":{"annotations":{"certpilot.dev/serial-web":"abc123"}},"spec":{` + volume + `,"containers":[` +
				`{"name":"sidecar","volumeMounts":[{"name":"certpilot-web","readOnly":true,"mountPath":"/tls"}]}]}}`,
		},
		"missing container": {
			entries:      []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", Env: "SSL_CERTS", Container: "nope"}},
			live:         live(app),
			wantProblems: []string{`Deployment/web has no container "nope"`},
		},
		"env name set by someone else": {
			entries:      []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", Env: "SSL_CERTS"}},
			live:         live(corev1.Container{Name: "app", Env: []corev1.EnvVar{{Name: "SSL_CERTS", Value: "x"}}}),
			wantProblems: []string{`container "app" already has an environment variable SSL_CERTS`},
		},
		"env name set by this certificate earlier": {
			entries: []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", Env: "SSL_CERTS"}},
			live:    live(corev1.Container{Name: "app", Env: []corev1.EnvVar{{Name: "SSL_CERTS"}}}),
			owned:   ownedEnv,
			want:    `{"metadata":{"annotations":{"certpilot.dev/serial-web":"abc123"}},"spec":{"containers":[{"name":"app","env":[` + envRef + `]}]}}`,
		},
		"mount path taken": {
			entries:      []certpilotv1alpha1.InjectTarget{{Kind: "Deployment", Name: "web", MountPath: "/tls"}},
			live:         live(corev1.Container{Name: "app", VolumeMounts: []corev1.VolumeMount{{Name: "other", MountPath: "/tls"}}}),
			wantProblems: []string{`already mounts something at /tls`},
		},
		"repeated entry refused, first kept": {
			entries: []certpilotv1alpha1.InjectTarget{
				{Kind: "Deployment", Name: "web", Env: "SSL_CERTS"},
				{Kind: "Deployment", Name: "web", Env: "SSL_CERTS", Container: "app"},
			},
			live:         live(app),
			want:         `{"metadata":{"annotations":{"certpilot.dev/serial-web":"abc123"}},"spec":{"containers":[{"name":"app","env":[` + envRef + `]}]}}`,
			wantProblems: []string{"repeats an earlier entry"},
		},
		"no entries: nothing": {live: live(app)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			plan := planInjection(source, workload, tt.entries, tt.live, tt.owned)
			got := ""
			if plan.template != nil {
				data, err := json.Marshal(plan.template)
				if err != nil {
					t.Fatal(err)
				}
				got = string(data)
			}
			if got != tt.want {
				t.Errorf("template\n got %s\nwant %s", got, tt.want)
			}
			if len(plan.problems) != len(tt.wantProblems) {
				t.Fatalf("problems %+v, want %d", plan.problems, len(tt.wantProblems))
			}
			for i, want := range tt.wantProblems {
				if !strings.Contains(plan.problems[i].message, want) {
					t.Errorf("problem %q does not contain %q", plan.problems[i].message, want)
				}
			}
		})
	}
}

func TestSameInjection(t *testing.T) {
	env := func(names ...string) *corev1ac.PodTemplateSpecApplyConfiguration {
		container := corev1ac.Container().WithName("app")
		for _, name := range names {
			container.WithEnv(corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
				WithSecretKeyRef(corev1ac.SecretKeySelector().WithName("s").WithKey("bundle.pem"))))
		}
		return corev1ac.PodTemplateSpec().WithSpec(corev1ac.PodSpec().WithContainers(container))
	}
	tests := map[string]struct {
		owned, desired *corev1ac.PodTemplateSpecApplyConfiguration
		want           bool
	}{
		"both nothing":          {want: true},
		"owned empty":           {owned: corev1ac.PodTemplateSpec(), want: true},
		"owned, nothing wanted": {owned: env("A"), want: false},
		"nothing owned":         {desired: env("A"), want: false},
		"same":                  {owned: env("A", "B"), desired: env("A", "B"), want: true},
		"other order":           {owned: env("B", "A"), desired: env("A", "B"), want: true},
		"differs":               {owned: env("A"), desired: env("A", "B"), want: false},
		"annotation changed": {
			owned:   env("A").WithAnnotations(map[string]string{"certpilot.dev/serial-web": "1"}),
			desired: env("A").WithAnnotations(map[string]string{"certpilot.dev/serial-web": "2"}),
			want:    false,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := sameInjection(tt.owned, tt.desired); got != tt.want {
				t.Errorf("sameInjection = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestInjectNames(t *testing.T) {
	long := strings.Repeat("a", 253)
	dotted := "www.example.com"
	tests := map[string]struct {
		got     string
		max     int
		prefix  string
		notSame string
	}{
		"field manager short":   {got: injectFieldManager("web"), max: 128, prefix: "certpilot-inject-web"},
		"field manager long":    {got: injectFieldManager(long), max: 128, prefix: "certpilot-inject-aaa"},
		"annotation short":      {got: serialAnnotation("web"), max: len("certpilot.dev/") + 63, prefix: "certpilot.dev/serial-web"},
		"annotation long":       {got: serialAnnotation(long), max: len("certpilot.dev/") + 63, prefix: "certpilot.dev/serial-aaa"},
		"volume short":          {got: injectVolumeName("web"), max: 63, prefix: "certpilot-web"},
		"volume long":           {got: injectVolumeName(long), max: 63, prefix: "certpilot-aaa"},
		"volume dotted":         {got: injectVolumeName(dotted), max: 63, prefix: "certpilot-www-example-com-", notSame: injectVolumeName("www-example-com")},
		"long names stay apart": {got: injectFieldManager(long), max: 128, prefix: "certpilot-inject-", notSame: injectFieldManager(long[1:] + "b")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if len(tt.got) > tt.max || !strings.HasPrefix(tt.got, tt.prefix) || strings.ContainsAny(strings.TrimPrefix(tt.got, "certpilot.dev/"), "/") {
				t.Errorf("%q: want at most %d characters starting with %q", tt.got, tt.max, tt.prefix)
			}
			if tt.notSame != "" && tt.got == tt.notSame {
				t.Errorf("%q collides", tt.got)
			}
		})
	}
	if strings.Contains(injectVolumeName(dotted), ".") {
		t.Errorf("volume name %q has a dot", injectVolumeName(dotted))
	}
}

func TestRolloutDefaults(t *testing.T) {
	tests := map[string]struct {
		entry certpilotv1alpha1.InjectTarget
		want  string
	}{
		"env":          {certpilotv1alpha1.InjectTarget{Env: "X"}, "Always"},
		"env never":    {certpilotv1alpha1.InjectTarget{Env: "X", Rollout: "Never"}, "Never"},
		"mount":        {certpilotv1alpha1.InjectTarget{MountPath: "/x"}, "Never"},
		"mount always": {certpilotv1alpha1.InjectTarget{MountPath: "/x", Rollout: "Always"}, "Always"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := rolloutOf(tt.entry); got != tt.want {
				t.Errorf("rolloutOf = %s, want %s", got, tt.want)
			}
		})
	}
}
