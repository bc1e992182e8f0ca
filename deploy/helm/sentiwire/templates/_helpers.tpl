{{/* Names and labels shared by every template. */}}
{{- define "sentiwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sentiwire.fullname" -}}
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

{{- define "sentiwire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sentiwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sentiwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sentiwire.labels" -}}
helm.sh/chart: {{ include "sentiwire.chart" . }}
{{ include "sentiwire.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sentiwire
{{- end -}}

{{- define "sentiwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sentiwire.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Serving image: the tag names the onnxruntime flavour (-cpu / -gpu). */}}
{{- define "sentiwire.image" -}}
{{- $flavour := ternary "gpu" "cpu" .Values.gpu.enabled -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion $flavour) .Values.image.tag -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "sentiwire.trainImage" -}}
{{- $tag := default .Chart.AppVersion .Values.retrain.image.tag -}}
{{- printf "%s:%s" .Values.retrain.image.repository $tag -}}
{{- end -}}

{{- define "sentiwire.modelClaim" -}}
{{- default (printf "%s-models" (include "sentiwire.fullname" .)) .Values.model.pvc.existingClaim -}}
{{- end -}}

{{/* The config file as the pods read it; the GPU switch sets the model device. */}}
{{- define "sentiwire.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if .Values.gpu.enabled -}}
{{- $_ := set $cfg.model "device" .Values.gpu.device -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Kafka credentials and CA from existing Secrets: never written into the ConfigMap. */}}
{{- define "sentiwire.commonEnv" -}}
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: HF_HUB_OFFLINE
  value: "1"
{{- with .Values.kafka.saslSecret }}
{{- if .name }}
- name: SENTIWIRE_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .usernameKey }}
- name: SENTIWIRE_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "sentiwire.tlsVolumeMount" -}}
{{- if .Values.kafka.tlsSecret.name -}}
- name: kafka-tls
  mountPath: {{ .Values.kafka.tlsSecret.mountPath }}
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "sentiwire.tlsVolume" -}}
{{- if .Values.kafka.tlsSecret.name -}}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tlsSecret.name }}
    defaultMode: 0440
{{- end -}}
{{- end -}}

{{- define "sentiwire.httpProbes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end -}}
