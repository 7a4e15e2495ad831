{{/* The agent's bare name, validated (the RBAC and admission policies are built on it). */}}
{{- define "negotiator.agent" -}}
{{- $agent := required "agent: set the agent's name (--set agent=alpha)" .Values.agent | trimPrefix "agent-" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?$" $agent) -}}
{{- fail (printf "agent: %q is not a DNS label (a-z, 0-9, '-')" $agent) -}}
{{- end -}}
{{- if eq $agent "market" -}}
{{- fail "agent: the name \"market\" is reserved for the market; choose another name" -}}
{{- end -}}
{{- $agent -}}
{{- end -}}

{{- define "negotiator.home" -}}
{{- .Values.namespace | default (printf "agent-%s" (include "negotiator.agent" .)) -}}
{{- end -}}

{{- define "negotiator.inbox" -}}
{{- printf "%s-inbox" (include "negotiator.home" .) -}}
{{- end -}}

{{/* The policy the negotiator runs: learned:<mounted file> unless the image holds it. An unknown
source is refused by values.schema.json first; the check here holds under --skip-schema-validation. */}}
{{- define "negotiator.policy" -}}
{{- if eq .Values.policy.source "builtin" -}}
{{- .Values.policy.spec -}}
{{- else if eq .Values.policy.source "configMap" -}}
{{- printf "learned:/etc/gpuparley/policy/%s" .Values.policy.configMap.key -}}
{{- else if or (eq .Values.policy.source "volume") (eq .Values.policy.source "image") -}}
{{- printf "learned:/etc/gpuparley/policy/%s" .Values.policy.file -}}
{{- else -}}
{{- fail (printf "policy.source: %q is not one of builtin, configMap, volume, image" .Values.policy.source) -}}
{{- end -}}
{{- end -}}

{{- define "negotiator.labels" -}}
app.kubernetes.io/name: gpuparley-negotiator
app.kubernetes.io/instance: {{ include "negotiator.agent" . }}
gpuparley.io/agent: agent-{{ include "negotiator.agent" . }}
{{- end -}}

{{- define "negotiator.helmLabels" -}}
{{ include "negotiator.labels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
