{{/*
Object names are fixed, not derived from the release name: the CLI, the
agent and the node Envoy's bootstrap find the controller by them, and the
chart is installed once per cluster.
*/}}
{{- define "nodemesh.controller" -}}nodemesh-controller{{- end -}}
{{- define "nodemesh.agent" -}}nodemesh-agent{{- end -}}
{{- define "nodemesh.envoy" -}}nodemesh-envoy{{- end -}}

{{/* The controller's authentication objects (package api names them for the code). */}}
{{- define "nodemesh.debug" -}}nodemesh-debug{{- end -}}
{{- define "nodemesh.caSecret" -}}nodemesh-controller-ca{{- end -}}
{{- define "nodemesh.caBundle" -}}nodemesh-ca-root-cert{{- end -}}
{{- define "nodemesh.xdsAudience" -}}nodemesh-xds{{- end -}}

{{/* Labels on every object; "component" is controller, agent or envoy. */}}
{{- define "nodemesh.labels" -}}
app.kubernetes.io/name: nodemesh-{{ .component }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: nodemesh
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Selector labels: stable across upgrades (selectors are immutable). */}}
{{- define "nodemesh.selectorLabels" -}}
app.kubernetes.io/name: nodemesh-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* An image reference: global.imageRegistry overrides the image's registry; an empty tag is the appVersion. */}}
{{- define "nodemesh.image" -}}
{{- $registry := .image.registry -}}
{{- if .root.Values.global.imageRegistry -}}{{- $registry = .root.Values.global.imageRegistry -}}{{- end -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}{{ printf "%s/%s:%s" $registry .image.repository $tag }}{{- else -}}{{ printf "%s:%s" .image.repository $tag }}{{- end -}}
{{- end -}}

{{/* The controller's xDS address as node Envoys dial it (its host is the name the controller's certificate is verified for). */}}
{{- define "nodemesh.xdsAddress" -}}
{{ include "nodemesh.controller" . }}.{{ .Release.Namespace }}.svc:15010
{{- end -}}

{{/* The API server address, when k8sServiceHost is set: env entries for a container. */}}
{{- define "nodemesh.apiServerEnv" -}}
{{- if .Values.k8sServiceHost }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.k8sServiceHost | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.k8sServicePort | default "443" | toString | quote }}
{{- end }}
{{- end -}}
