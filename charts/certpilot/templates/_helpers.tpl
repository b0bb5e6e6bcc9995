{{- define "certpilot.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "certpilot.edgeName" -}}
{{- printf "%s-edge" (include "certpilot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "certpilot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "certpilot.labels" -}}
app.kubernetes.io/name: certpilot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}

{{- define "certpilot.selectorLabels" -}}
app.kubernetes.io/name: certpilot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "certpilot.edgeSelectorLabels" -}}
app.kubernetes.io/name: certpilot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: edge
{{- end -}}

{{/* The restricted Pod Security Standard, for every container of the chart. */}}
{{- define "certpilot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "certpilot.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Namespaces that get Roles when watchNamespaces is set: those listed, the release's, and the cluster
resource namespace (the manager always watches it: --watch-namespaces adds it).
*/}}
{{- define "certpilot.roleNamespaces" -}}
{{- $namespaces := concat (.Values.watchNamespaces | default list) (list .Release.Namespace (default .Release.Namespace .Values.clusterResourceNamespace)) | uniq -}}
{{- toJson $namespaces -}}
{{- end -}}
