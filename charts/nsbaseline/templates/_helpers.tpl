{{/* Names are fixed: the operator is cluster-wide, one install per cluster, and the admission
policy names the ServiceAccount it trusts. */}}
{{- define "nsbaseline.labels" -}}
app.kubernetes.io/name: nsbaseline
app.kubernetes.io/part-of: nsbaseline
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "nsbaseline.selectorLabels" -}}
app.kubernetes.io/name: nsbaseline
app.kubernetes.io/component: operator
{{- end -}}

{{- define "nsbaseline.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:nsbaseline
{{- end -}}
