{{/* The chart's short name. */}}
{{- define "servauth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-servauth, or the release name when it already holds the chart name. */}}
{{- define "servauth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "servauth.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "servauth.labels" -}}
helm.sh/chart: {{ include "servauth.chart" . }}
{{ include "servauth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: servauth
{{- end }}

{{/* Labels that select the release's pods. */}}
{{- define "servauth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "servauth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "servauth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "servauth.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the pods read: yours (secrets.existingSecret) or the chart's. */}}
{{- define "servauth.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "servauth.fullname" . }}
{{- end }}
{{- end }}

{{/*
SERVAUTH_SHUTDOWN_GRACE in whole seconds, for the check against the termination grace
period. Understands the `Ns`, `Nm` and `Nh` forms; anything else is left to servauth.
*/}}
{{- define "servauth.shutdownGraceSeconds" -}}
{{- $grace := toString (default "30s" (index .Values.config "SERVAUTH_SHUTDOWN_GRACE")) }}
{{- if regexMatch "^[0-9]+s$" $grace }}
{{- trimSuffix "s" $grace | atoi }}
{{- else if regexMatch "^[0-9]+m$" $grace }}
{{- mul (trimSuffix "m" $grace | atoi) 60 }}
{{- else if regexMatch "^[0-9]+h$" $grace }}
{{- mul (trimSuffix "h" $grace | atoi) 3600 }}
{{- else }}
{{- 0 }}
{{- end }}
{{- end }}
