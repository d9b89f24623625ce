{{- define "scriptrun.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "scriptrun.labels" -}}
app.kubernetes.io/name: scriptrun
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "scriptrun.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "scriptrun.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "scriptrun.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "scriptrun.runnerImage" -}}
{{- if .Values.operator.defaultRunImage -}}{{ .Values.operator.defaultRunImage }}{{- else -}}{{ .Values.runnerImage.repository }}:{{ default .Chart.AppVersion .Values.runnerImage.tag }}{{- end -}}
{{- end -}}

{{- define "scriptrun.monitorImage" -}}
{{ .Values.monitorImage.repository }}:{{ default .Chart.AppVersion .Values.monitorImage.tag }}
{{- end -}}

{{/* The namespace of the operator's heartbeat Lease: one it watches (the release's, unless
watchNamespaces leaves it out; then the first of those). */}}
{{- define "scriptrun.heartbeatNamespace" -}}
{{- if or (not .Values.watchNamespaces) (has .Release.Namespace .Values.watchNamespaces) -}}
{{- .Release.Namespace -}}
{{- else -}}
{{- first .Values.watchNamespaces -}}
{{- end -}}
{{- end }}
