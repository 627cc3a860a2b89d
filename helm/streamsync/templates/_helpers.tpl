{{/* Names, labels and the pieces every streamsync pod shares. */}}

{{- define "streamsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamsync.fullname" -}}
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

{{- define "streamsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamsync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "streamsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamsync
{{- end -}}

{{- define "streamsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamsync.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "streamsync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The configuration file: values.config plus the chart-owned sections. */}}
{{- define "streamsync.configFile" -}}
{{- $obs := dict
      "service_name" "streamsync"
      "admin" (dict "enabled" true "host" "0.0.0.0" "port" (int .Values.admin.port))
      "log_format" .Values.observability.logFormat
      "log_level" .Values.observability.logLevel
      "trace_sample_ratio" .Values.observability.traceSampleRatio -}}
{{- if gt (int .Values.observability.stallTimeoutSeconds) 0 -}}
{{- $_ := set $obs.admin "stall_timeout_seconds" (int .Values.observability.stallTimeoutSeconds) -}}
{{- end -}}
{{- if .Values.observability.otlpEndpoint -}}
{{- $_ := set $obs "otlp_endpoint" .Values.observability.otlpEndpoint -}}
{{- end -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "observability" $obs -}}
{{- /* The paths the chart mounts are the chart's to say. */ -}}
{{- $evaluate := default (dict) (get $config "evaluate") -}}
{{- $_ := set $evaluate "audiences" "/etc/streamsync/audiences" -}}
{{- $_ := set $evaluate "state_dir" .Values.evaluate.state.mountPath -}}
{{- $_ := set $config "evaluate" $evaluate -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Checksums of what a pod reads at start-up: a change rolls the pods. */}}
{{- define "streamsync.checksums" -}}
checksum/config: {{ include "streamsync.configFile" . | sha256sum }}
checksum/audiences: {{ toYaml .Values.audiences | sha256sum }}
{{- end -}}

{{/* For annotation-based scraping; not with the ServiceMonitor, or pods are scraped twice. */}}
{{- define "streamsync.podAnnotations" -}}
{{- if not .Values.serviceMonitor.enabled -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.admin.port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* Environment from Secrets: a map of NAME -> {secretName, key}. */}}
{{- define "streamsync.secretEnv" -}}
{{- range $name, $ref := . }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "credentials.%s.secretName is required" $name) $ref.secretName }}
      key: {{ required (printf "credentials.%s.key is required" $name) $ref.key }}
{{- end }}
{{- end -}}

{{/* The container settings evaluate and deliver share. Argument: dict root, args. */}}
{{- define "streamsync.container" -}}
{{- $root := .root -}}
image: {{ include "streamsync.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
args:
{{- toYaml .args | nindent 2 }}
env:
  - name: PYTHONUNBUFFERED
    value: "1"
{{- with $root.Values.credentials }}
{{- include "streamsync.secretEnv" . | nindent 2 }}
{{- end }}
{{- with .extraCredentials }}
{{- include "streamsync.secretEnv" . | nindent 2 }}
{{- end }}
ports:
  - name: admin
    containerPort: {{ $root.Values.admin.port }}
    protocol: TCP
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 3
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
{{- end -}}

{{/* Volumes every pod mounts: config, audiences, /tmp and secret files. */}}
{{- define "streamsync.volumeMounts" -}}
- name: config
  mountPath: /etc/streamsync/streamsync.yaml
  subPath: streamsync.yaml
  readOnly: true
- name: audiences
  mountPath: /etc/streamsync/audiences
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- range .Values.secretFiles }}
- name: secret-{{ .name }}
  mountPath: /var/run/secrets/streamsync/{{ .name }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "streamsync.volumes" -}}
- name: config
  {{- if .Values.configSecret }}
  secret:
    secretName: {{ include "streamsync.fullname" . }}-config
  {{- else }}
  configMap:
    name: {{ include "streamsync.fullname" . }}-config
  {{- end }}
- name: audiences
  configMap:
    name: {{ include "streamsync.fullname" . }}-audiences
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- range .Values.secretFiles }}
- name: secret-{{ required "secretFiles[].name is required" .name }}
  secret:
    secretName: {{ required "secretFiles[].secretName is required" .secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Render-time checks: fail with one line naming the value. */}}
{{- define "streamsync.validate" -}}
{{- $kafka := default (dict) .Values.config.kafka -}}
{{- if and (not .Values.configSecret) (hasKey $kafka "sasl_password") -}}
{{- fail "config.kafka.sasl_password would be stored in a ConfigMap: use config.kafka.sasl_password_from: {env: KAFKA_SASL_PASSWORD} with credentials.KAFKA_SASL_PASSWORD, or set configSecret: true" -}}
{{- end -}}
{{- with $kafka.sasl_password_from -}}
{{- if and .env (not (hasKey (default (dict) $.Values.credentials) .env)) -}}
{{- fail (printf "config.kafka.sasl_password_from.env %s is not set in the pods: add credentials.%s: {secretName, key}" .env .env) -}}
{{- end -}}
{{- if .file -}}
{{- $names := list -}}
{{- range $.Values.secretFiles -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- $parts := splitList "/" (toString .file) -}}
{{- if not (and (hasPrefix "/var/run/secrets/streamsync/" (toString .file)) (gt (len $parts) 6) (has (index $parts 5) $names)) -}}
{{- fail (printf "config.kafka.sasl_password_from.file %s is not in a mounted Secret: add it to secretFiles and use /var/run/secrets/streamsync/<name>/<key>" (toString .file)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if hasKey .Values.config "observability" -}}
{{- fail "config.observability is written by the chart: set the observability and admin values instead" -}}
{{- end -}}
{{- $partitions := int .Values.inputPartitions -}}
{{- if lt $partitions 1 -}}
{{- fail "inputPartitions must be at least 1" -}}
{{- end -}}
{{- if and (not .Values.evaluate.autoscaling.enabled) (gt (int .Values.evaluate.replicas) $partitions) -}}
{{- fail (printf "evaluate.replicas (%d) exceeds inputPartitions (%d): a replica beyond the partition count gets no partition" (int .Values.evaluate.replicas) $partitions) -}}
{{- end -}}
{{- $hpa := .Values.evaluate.autoscaling -}}
{{- if $hpa.enabled -}}
{{- if gt (int $hpa.maxReplicas) $partitions -}}
{{- fail (printf "evaluate.autoscaling.maxReplicas (%d) exceeds inputPartitions (%d): a replica beyond the partition count gets no partition" (int $hpa.maxReplicas) $partitions) -}}
{{- end -}}
{{- if gt (int $hpa.minReplicas) (int $hpa.maxReplicas) -}}
{{- fail (printf "evaluate.autoscaling.minReplicas (%d) exceeds maxReplicas (%d)" (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if not (has .Values.evaluate.state.type (list "emptyDir" "persistentVolumeClaim")) -}}
{{- fail (printf "evaluate.state.type must be emptyDir or persistentVolumeClaim, not %q" .Values.evaluate.state.type) -}}
{{- end -}}
{{- range $name, $settings := (default (dict) .Values.config.destinations) -}}
{{- if hasKey (default (dict) $settings) "admin_port" -}}
{{- fail (printf "config.destinations.%s.admin_port is for several processes on one machine: each pod serves on admin.port" $name) -}}
{{- end -}}
{{- end -}}
{{- range $name, $dest := .Values.destinations -}}
{{- if not (hasKey (default (dict) $.Values.config.destinations) $name) -}}
{{- fail (printf "destinations.%s has no settings under config.destinations.%s (kind, base_url, credentials, ...)" $name $name) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "destinations.%s: a destination name must be lower-case letters, digits and '-'" $name) -}}
{{- end -}}
{{- $replicas := int (default $.Values.deliver.replicas $dest.replicas) -}}
{{- if gt $replicas (int $.Values.deltasPartitions) -}}
{{- fail (printf "destinations.%s.replicas (%d) exceeds deltasPartitions (%d): a replica beyond the partition count gets no partition" $name $replicas (int $.Values.deltasPartitions)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
