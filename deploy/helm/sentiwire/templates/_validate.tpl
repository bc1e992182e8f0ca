{{/* Values that would deploy something broken fail the render, naming the value. */}}
{{- define "sentiwire.validate" -}}
{{- $parts := int .Values.kafka.partitions -}}
{{- if lt $parts 1 -}}
{{- fail (printf "kafka.partitions must be >= 1 (got %v)" .Values.kafka.partitions) -}}
{{- end -}}
{{- $keda := .Values.autoscaling.keda -}}
{{- $hpa := .Values.autoscaling.hpa -}}
{{- if and $keda.enabled $hpa.enabled -}}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are exclusive: KEDA creates its own HPA" -}}
{{- end -}}
{{- if $keda.enabled -}}
{{- if gt (int $keda.maxReplicas) $parts -}}
{{- fail (printf "autoscaling.keda.maxReplicas (%v) is above kafka.partitions (%v): extra consumers would sit idle" $keda.maxReplicas $parts) -}}
{{- end -}}
{{- if gt (int $keda.minReplicas) (int $keda.maxReplicas) -}}
{{- fail (printf "autoscaling.keda.minReplicas (%v) is above autoscaling.keda.maxReplicas (%v)" $keda.minReplicas $keda.maxReplicas) -}}
{{- end -}}
{{- else if $hpa.enabled -}}
{{- if gt (int $hpa.maxReplicas) $parts -}}
{{- fail (printf "autoscaling.hpa.maxReplicas (%v) is above kafka.partitions (%v): extra consumers would sit idle" $hpa.maxReplicas $parts) -}}
{{- end -}}
{{- if gt (int $hpa.minReplicas) (int $hpa.maxReplicas) -}}
{{- fail (printf "autoscaling.hpa.minReplicas (%v) is above autoscaling.hpa.maxReplicas (%v)" $hpa.minReplicas $hpa.maxReplicas) -}}
{{- end -}}
{{- else if gt (int .Values.replicaCount) $parts -}}
{{- fail (printf "replicaCount (%v) is above kafka.partitions (%v): extra consumers would sit idle" .Values.replicaCount $parts) -}}
{{- end -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.config.shutdown_timeout_s) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than config.shutdown_timeout_s (%v), or pods are killed mid-drain" .Values.terminationGracePeriodSeconds .Values.config.shutdown_timeout_s) -}}
{{- end -}}
{{- if not (has .Values.model.source (list "pvc" "initContainer")) -}}
{{- fail (printf "model.source must be pvc or initContainer (got %q)" .Values.model.source) -}}
{{- end -}}
{{- if and .Values.gpu.enabled .Values.image.tag (not (contains "gpu" .Values.image.tag)) -}}
{{- fail (printf "gpu.enabled needs the GPU image flavour, but image.tag is %q (build with --build-arg FLAVOUR=gpu, tag *-gpu)" .Values.image.tag) -}}
{{- end -}}
{{- if and .Values.gpu.enabled (not (has .Values.gpu.device (list "cuda" "tensorrt" "auto"))) -}}
{{- fail (printf "gpu.device must be cuda, tensorrt or auto (got %q)" .Values.gpu.device) -}}
{{- end -}}
{{- if and .Values.retrain.enabled (ne .Values.model.source "pvc") -}}
{{- fail "retrain.enabled needs model.source=pvc: the CronJob promotes into the shared model volume" -}}
{{- end -}}
{{- end -}}
