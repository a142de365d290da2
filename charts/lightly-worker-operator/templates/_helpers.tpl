{{/* Chart name. */}}
{{- define "lwo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "lwo.fullname" -}}
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

{{- define "lwo.serverName" -}}
{{- printf "%s-server" (include "lwo.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{- define "lwo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels as the prometheus-community charts set them. */}}
{{- define "lwo.labels" -}}
helm.sh/chart: {{ include "lwo.chart" . }}
app.kubernetes.io/name: {{ include "lwo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lightly-worker-fleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lwo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lwo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "lwo.serverSelectorLabels" -}}
app.kubernetes.io/name: {{ include "lwo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "lwo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lwo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest; the tag defaults to the appVersion. Call with (list image $). */}}
{{- define "lwo.image" -}}
{{- $img := index . 0 }}{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches (a list, as JSON); empty when all namespaces. */}}
{{- define "lwo.watchedNamespaces" -}}
{{- if .Values.watch.allNamespaces }}
{{- list | toJson }}
{{- else if .Values.watch.namespaces }}
{{- .Values.watch.namespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* Where the token/registry Secrets go (list as JSON): explicit, else watched, else the release namespace. */}}
{{- define "lwo.secretNamespaces" -}}
{{- $explicit := index . 0 }}{{- $root := index . 1 }}
{{- if $explicit }}
{{- $explicit | uniq | toJson }}
{{- else if $root.Values.watch.allNamespaces }}
{{- list $root.Release.Namespace | toJson }}
{{- else }}
{{- include "lwo.watchedNamespaces" $root }}
{{- end }}
{{- end }}

{{- define "lwo.serverUrl" -}}
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" .Values.server.tls.enabled) (include "lwo.serverName" .) .Release.Namespace (int .Values.server.service.port) }}
{{- end }}

{{- define "lwo.apiUrl" -}}
{{- if .Values.apiUrl }}
{{- .Values.apiUrl }}
{{- else if .Values.server.enabled }}
{{- include "lwo.serverUrl" . }}
{{- else }}
{{- "http://lightly-server:8080" }}
{{- end }}
{{- end }}

{{/* The generated permission lists (files/rbac.yaml from operator/lightly_operator/rbac.py). */}}
{{- define "lwo.rbacRules" -}}
{{- .Files.Get "files/rbac.yaml" }}
{{- end }}

{{/* Checks the schema cannot express. */}}
{{- define "lwo.validate" -}}
{{- if and .Values.watch.allNamespaces .Values.watch.namespaces }}
{{- fail (printf "watch.namespaces (%s) is set but watch.allNamespaces is true: remove one (allNamespaces grants access to every namespace)" (join ", " .Values.watch.namespaces)) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (eq .Values.leaderElection "off") }}
{{- fail "replicaCount > 1 needs leaderElection: on (otherwise several operators act on the same fleets at once)" }}
{{- end }}
{{- if and .Values.server.enabled (eq .Values.server.database.type "sqlite") (gt (int .Values.server.replicas) 1) }}
{{- fail "server.replicas > 1 needs server.database.type: external (PostgreSQL); SQLite serves one replica" }}
{{- end }}
{{- if and .Values.server.enabled (eq .Values.server.database.type "sqlite") (gt (int (.Values.server.processes | default 1)) 1) }}
{{- fail "server.processes > 1 needs server.database.type: external (PostgreSQL); SQLite serves from one process" }}
{{- end }}
{{- if and .Values.server.enabled (eq .Values.server.database.type "external") (not .Values.server.database.existingSecret) }}
{{- fail "server.database.type external needs server.database.existingSecret (a Secret holding the PostgreSQL URL)" }}
{{- end }}
{{- if and .Values.lightlyToken.create (not .Values.lightlyToken.value) }}
{{- fail "lightlyToken.create needs lightlyToken.value (or create the Secret yourself: see NOTES)" }}
{{- end }}
{{- if and .Values.registryCredentials.create (not .Values.registryCredentials.value) }}
{{- fail "registryCredentials.create needs registryCredentials.value (the content of container-credentials.json)" }}
{{- end }}
{{- if and .Values.server.enabled .Values.server.tls.enabled (not .Values.server.tls.existingSecret) }}
{{- fail "server.tls.enabled needs server.tls.existingSecret (a Secret of type kubernetes.io/tls with tls.crt and tls.key, e.g. from cert-manager)" }}
{{- end }}
{{- if and .Values.metricsAuth.enabled (not .Values.metricsAuth.existingSecret) }}
{{- fail "metricsAuth.enabled needs metricsAuth.existingSecret (a Secret holding the /metrics bearer token under metricsAuth.key)" }}
{{- end }}
{{- if and .Values.lightlyToken.create .Values.server.enabled .Values.server.tokenBootstrap.enabled }}
{{- fail "lightlyToken.create and server.tokenBootstrap.enabled both make the token Secret; turn one off" }}
{{- end }}
{{- end }}

{{/* LIGHTLY_SERVER_DATABASE of the bundled server: the SQLite file on /data, or a URL from a Secret. */}}
{{- define "lwo.serverDatabaseEnv" -}}
- name: LIGHTLY_SERVER_DATABASE
{{- if eq .Values.server.database.type "external" }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.server.database.existingSecret }}
      key: {{ .Values.server.database.existingSecretKey }}
{{- else }}
  value: sqlite:////data/lightly-server.sqlite3
{{- end }}
{{- end }}

{{/* The Secret with the server's secret key: the given one, else the one the token bootstrap creates; empty: none. */}}
{{- define "lwo.serverSecretKeySecret" -}}
{{- if .Values.server.secretKey.existingSecret }}
{{- .Values.server.secretKey.existingSecret }}
{{- else if .Values.server.tokenBootstrap.enabled }}
{{- printf "%s-secret-key" (include "lwo.serverName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* A ServiceMonitor endpoint's bearer token (metricsAuth); empty when off. */}}
{{- define "lwo.metricsAuthorization" -}}
{{- if .Values.metricsAuth.enabled }}
authorization:
  type: Bearer
  credentials:
    name: {{ .Values.metricsAuth.existingSecret | quote }}
    key: {{ .Values.metricsAuth.key | quote }}
{{- end }}
{{- end }}
