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

{{/* What the operator does inside a namespace it serves: a ClusterRole's rules when it serves the whole
cluster; with watchNamespaces, a Role's in each of those (it is then granted nothing in the others). */}}
{{- define "scriptrun.namespacedRules" }}
  # ScriptRuns: watched; a Workflow's children created, stopped (spec.terminate), retired by a retry;
  # deleted by their ttlSecondsAfterFinished
  - apiGroups: [scriptrun.dev]
    resources: [scriptruns]
    verbs: [list, watch, create, patch, delete]
  # Workflows: watched; deleted by their ttlStrategy (the operator never creates or edits one)
  - apiGroups: [scriptrun.dev]
    resources: [workflows]
    verbs: [list, watch, delete]
  # the operator is the only writer of status: merge patches of the status subresource
  - apiGroups: [scriptrun.dev]
    resources: [scriptruns/status, workflows/status]
    verbs: [patch]
  # run pods: watched (the operator's own, by label), created, read when their name is taken, deleted
  # (deadline, terminate, a stale holder of the name), collected by a Workflow's podGC (by selector)
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, delete, deletecollection]
  # spec.gates.before: the gate container's full report (SARIF, SBOM) is one line of its log
  - apiGroups: [""]
    resources: [pods/log]
    verbs: [get]
  # a large inline script travels in an owned ConfigMap; a run's script.configMapRef is checked;
  # the gate report is kept in one; spec.regression's history is one per key, replaced as runs finish
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, create, update]
  # core/v1 Events on runs and workflows (what `kubectl describe` shows)
  - apiGroups: [""]
    resources: [events]
    verbs: [create]
  # the heartbeat Leases, watched (server-side selected by their label) to detect hung watches
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [list, watch]
{{- end }}
