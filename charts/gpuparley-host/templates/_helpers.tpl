{{/* The image of the market controller (and negotiators): repository:tag. */}}
{{- define "gpuparley-host.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels every templated object carries. */}}
{{- define "gpuparley-host.labels" -}}
app.kubernetes.io/name: gpuparley-market
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "gpuparley-host.selector" -}}
app.kubernetes.io/name: gpuparley-market
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
