{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "twin-merging.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; the release name alone when it already holds the chart name. */}}
{{- define "twin-merging.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "twin-merging.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object except the component. */}}
{{- define "twin-merging.commonLabels" -}}
helm.sh/chart: {{ include "twin-merging.chart" . }}
app.kubernetes.io/name: {{ include "twin-merging.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of the server's objects. */}}
{{- define "twin-merging.labels" -}}
{{ include "twin-merging.commonLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{/* Labels that select the server's pods (immutable once deployed). */}}
{{- define "twin-merging.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twin-merging.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "twin-merging.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "twin-merging.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "twin-merging.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of the Secret with the object-store credentials; "" when there is none. */}}
{{- define "twin-merging.objectStoreSecret" -}}
{{- if .Values.objectStore.existingSecret -}}
{{- .Values.objectStore.existingSecret -}}
{{- else if .Values.objectStore.create -}}
{{- printf "%s-object-store" (include "twin-merging.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Object-store environment of the server and the merge Job. */}}
{{- define "twin-merging.objectStoreEnv" -}}
{{- $secret := include "twin-merging.objectStoreSecret" . -}}
{{- if $secret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.objectStore.secretKeys.accessKeyId }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.objectStore.secretKeys.secretAccessKey }}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.objectStore.secretKeys.sessionToken }}
      optional: true
{{- end }}
{{- with .Values.objectStore.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.objectStore.endpoint }}
- name: TWIN_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Volume source of the file:// store as YAML; "" when there is none. */}}
{{- define "twin-merging.storeVolume" -}}
{{- if .Values.artifact.storeVolume -}}
{{- toYaml .Values.artifact.storeVolume -}}
{{- else if .Values.artifact.persistence.enabled -}}
persistentVolumeClaim:
  claimName: {{ default (printf "%s-artifacts" (include "twin-merging.fullname" .)) .Values.artifact.persistence.existingClaim }}
{{- end -}}
{{- end -}}

{{/* config.drain_timeout_ms, or the server's default. */}}
{{- define "twin-merging.drainTimeoutSeconds" -}}
{{- $ms := int (default 30000 .Values.config.drain_timeout_ms) -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/* Grace period: preStop sleep + drain + margin, unless set; a set one must cover both. */}}
{{- define "twin-merging.terminationGracePeriodSeconds" -}}
{{- $drain := int (include "twin-merging.drainTimeoutSeconds" .) -}}
{{- $needed := add (int .Values.lifecycle.preStopSleepSeconds) $drain -}}
{{- $set := int .Values.lifecycle.terminationGracePeriodSeconds -}}
{{- if eq $set 0 -}}
{{- add $needed 10 -}}
{{- else if le $set $needed -}}
{{- fail (printf "lifecycle.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + drain_timeout_ms (%d s)" $set $needed) -}}
{{- else -}}
{{- $set -}}
{{- end -}}
{{- end -}}

{{/* server.yaml: the chart-managed fields, then the rest of .Values.config. */}}
{{- define "twin-merging.serverYaml" -}}
listen_address: {{ printf "0.0.0.0:%d" (int .Values.ports.grpc) | quote }}
metrics_address: {{ if .Values.metrics.enabled }}{{ printf "0.0.0.0:%d" (int .Values.ports.metrics) | quote }}{{ else }}""{{ end }}
artifact_uri: {{ required "artifact.uri is required" .Values.artifact.uri | quote }}
artifact_version: {{ default "LATEST" .Values.artifact.version | quote }}
cache_dir: {{ .Values.cacheVolume.mountPath | quote }}
admin:
  listen_address: {{ printf "%s:%d" (ternary "0.0.0.0" "127.0.0.1" .Values.admin.exposed) (int .Values.ports.admin) | quote }}
  {{- if .Values.admin.tokenSecretName }}
  token_file: /var/run/twin/admin/token
  {{- end }}
{{- if .Values.tls.enabled }}
tls:
  cert_file: /var/run/twin/tls/tls.crt
  key_file: /var/run/twin/tls/tls.key
  {{- if .Values.tls.clientCaSecretName }}
  client_ca_file: /var/run/twin/client-ca/ca.crt
  {{- end }}
  refresh_interval_s: {{ .Values.tls.refreshIntervalSeconds }}
{{- end }}
{{- with .Values.config }}
{{ toYaml . }}
{{- end }}
{{- end -}}
