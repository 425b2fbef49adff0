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

{{/* A list of strings as a CEL list literal, for the admission policies' identity lists. */}}
{{- define "nsbaseline.celStrings" -}}
[{{- range $i, $v := . }}{{ if $i }}, {{ end }}{{ if or (contains "'" $v) (contains "\\" $v) }}{{ fail (printf "identity %q must not contain quotes or backslashes" $v) }}{{ end }}'{{ $v }}'{{- end }}]
{{- end -}}

{{/* The BaselinePolicies the pod gate binds (defaultPolicy and podGate.policies), each as
{name, vap, namespaceSelector}: the same binding as nsbaseline.protections.gate_binding, with the
CRD's defaults. Audit mode or no default-deny: no binding (pods there never wait). */}}
{{- define "nsbaseline.gatedPolicies" -}}
{{- $policies := list -}}
{{- with .Values.defaultPolicy }}{{ if .name }}{{ $policies = append $policies . }}{{ end }}{{ end -}}
{{- range .Values.podGate.policies }}{{ $policies = append $policies . }}{{ end -}}
{{- $out := list -}}
{{- range $p := $policies -}}
{{- if not $p.name }}{{ fail "podGate.policies: every entry needs a name (and the policy's spec)" }}{{ end -}}
{{- $spec := $p.spec | default dict -}}
{{- $deny := $spec.defaultDeny | default dict -}}
{{- $in := ternary $deny.ingress true (hasKey $deny "ingress") -}}
{{- $eg := ternary $deny.egress true (hasKey $deny "egress") -}}
{{- $vap := "" -}}
{{- if and $in $eg }}{{ $vap = "nsbaseline-pod-gate" }}{{ else if $in }}{{ $vap = "nsbaseline-pod-gate-ingress" }}{{ else if $eg }}{{ $vap = "nsbaseline-pod-gate-egress" }}{{ end -}}
{{- if and (eq ($spec.mode | default "Enforce") "Enforce") $vap -}}
{{- $sel := ternary $spec.namespaceSelector (dict "matchLabels" (dict "nsbaseline.io/enabled" "true")) (hasKey $spec "namespaceSelector") | default dict -}}
{{- $excluded := ternary $spec.excludedNamespaces (list "kube-system" "kube-public" "kube-node-lease") (hasKey $spec "excludedNamespaces") | default list -}}
{{- $selector := dict -}}
{{- with $sel.matchLabels }}{{ $_ := set $selector "matchLabels" . }}{{ end -}}
{{- $expressions := $sel.matchExpressions | default list -}}
{{- if $excluded }}{{ $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (sortAlpha $excluded)) }}{{ end -}}
{{- if $expressions }}{{ $_ := set $selector "matchExpressions" $expressions }}{{ end -}}
{{- $out = append $out (dict "name" $p.name "vap" $vap "namespaceSelector" $selector) -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
