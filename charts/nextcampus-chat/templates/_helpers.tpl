{{/* The release-scoped name prefix of every object. */}}
{{- define "nextcampus-chat.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; a component adds app.kubernetes.io/component. */}}
{{- define "nextcampus-chat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nextcampus-chat
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "chat"). */}}
{{- define "nextcampus-chat.componentLabels" -}}
{{ include "nextcampus-chat.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The selector of one component's pods: (dict "root" $ "component" "chat"). */}}
{{- define "nextcampus-chat.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Name of one component's objects: (dict "root" $ "component" "chat"). */}}
{{- define "nextcampus-chat.componentName" -}}
{{- printf "%s-%s" (include "nextcampus-chat.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* An image of ours: (dict "root" $ "image" .Values.chat.image). */}}
{{- define "nextcampus-chat.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
image: {{ printf "%s:%s" .image.repository $tag | quote }}
imagePullPolicy: {{ .image.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end -}}

{{/* An upstream image with its own pinned tag: (dict "image" .Values.redis.image). */}}
{{- define "nextcampus-chat.upstreamImage" -}}
image: {{ printf "%s:%s" .image.repository .image.tag | quote }}
imagePullPolicy: {{ .image.pullPolicy }}
{{- end -}}

{{/* Pod-level settings every workload shares: (dict "root" $), or (dict "root" $
"serviceAccount" name) for the one pod that talks to the Kubernetes API (the operator). No
other pod gets an API token: the namespace's default ServiceAccount would mount one into
every pod, for an attacker in any of them to use. */}}
{{- define "nextcampus-chat.podDefaults" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .serviceAccount }}
serviceAccountName: {{ .serviceAccount }}
automountServiceAccountToken: true
{{- else }}
automountServiceAccountToken: false
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* Name of the Secret with the HS256 key (jwt-secret, jwks.json); empty with a JWKS URL. */}}
{{- define "nextcampus-chat.jwtSecretName" -}}
{{- if .Values.jwt.jwksUrl -}}
{{- else if .Values.jwt.existingSecret -}}
{{- .Values.jwt.existingSecret -}}
{{- else -}}
{{- printf "%s-jwt" (include "nextcampus-chat.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret with the Redis password (key redis-password): the chart's Redis
always has one (redis.auth.existingSecret, else the chart's own); an external one may not. */}}
{{- define "nextcampus-chat.redisSecretName" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecret | default (printf "%s-redis-auth" (include "nextcampus-chat.fullname" .)) -}}
{{- else -}}
{{- .Values.redis.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The Redis Cluster's startup nodes as host:port,host:port. */}}
{{- define "nextcampus-chat.redisNodes" -}}
{{- if .Values.redis.enabled -}}
{{- $name := include "nextcampus-chat.componentName" (dict "root" . "component" "redis") -}}
{{- $nodes := list -}}
{{- range $i := until (int .Values.redis.replicas) -}}
{{- $nodes = append $nodes (printf "%s-%d.%s-headless.%s.svc.%s:6379" $name $i $name $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- join "," $nodes -}}
{{- else -}}
{{- required "redis.external.nodes: give the nodes of the Redis Cluster (host:port) when redis.enabled is false" (join "," .Values.redis.external.nodes) -}}
{{- end -}}
{{- end -}}

{{/* How durable an acknowledged write is (redis.durability): the settings of every Redis
client that writes (chat, operator), and what the chart's Redis nodes enforce themselves. */}}
{{- define "nextcampus-chat.redisDurability" -}}
{{- $d := .Values.redis.durability -}}
{{- $perPrimary := int .Values.redis.replicasPerPrimary -}}
{{- $min := ternary (min 1 $perPrimary) (int $d.minReplicas) (kindIs "invalid" $d.minReplicas) -}}
{{- if and .Values.redis.enabled (gt (int $min) $perPrimary) -}}
{{- fail (printf "redis.durability.minReplicas (%v) cannot exceed redis.replicasPerPrimary (%v): no write could ever be acknowledged" $min $perPrimary) -}}
{{- end -}}
{{- range $field := list "redis_min_replicas" "redis_without_replicas" "redis_wait_timeout_ms" -}}
{{- if or (hasKey ($.Values.chat.settings | default dict) $field) (hasKey ($.Values.operator.settings | default dict) $field) -}}
{{- fail (printf "set %s through redis.durability, not chat.settings or operator.settings: the Redis nodes must enforce the same" $field) -}}
{{- end -}}
{{- end -}}
redis_min_replicas: {{ $min }}
redis_without_replicas: {{ $d.withoutReplicas }}
redis_wait_timeout_ms: {{ $d.waitTimeoutMs }}
{{- end -}}

{{/* NEXTCAMPUS_* entries of a settings map ({field: value}) for a ConfigMap's data. Lists
become `a,b`; maps JSON (pydantic-settings reads a dict field's env var as JSON); whole
numbers stay whole (YAML numbers arrive as floats: 2097152 would otherwise print as
2.097152e+06, which no integer field accepts). */}}
{{- define "nextcampus-chat.settingsData" -}}
{{- range $field, $value := . }}
{{- $text := toString $value }}
{{- if kindIs "map" $value }}
{{- $text = toJson $value }}
{{- else if kindIs "slice" $value }}
{{- $text = join "," $value }}
{{- else if and (kindIs "float64" $value) (eq (floor $value) $value) }}
{{- $text = printf "%d" (int64 $value) }}
{{- end }}
NEXTCAMPUS_{{ upper $field }}: {{ $text | quote }}
{{- end }}
{{- end -}}

{{/* Env of a service container: its ConfigMap, and the secrets it needs. */}}
{{- define "nextcampus-chat.serviceEnv" -}}
envFrom:
- configMapRef:
    name: {{ .configMap }}
{{- $jwt := include "nextcampus-chat.jwtSecretName" .root }}
{{- $redis := include "nextcampus-chat.redisSecretName" .root }}
{{- if or (and .jwt $jwt) (and .redis $redis) }}
env:
{{- if and .jwt $jwt }}
- name: NEXTCAMPUS_JWT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $jwt }}, key: jwt-secret}
{{- end }}
{{- if and .redis $redis }}
- name: NEXTCAMPUS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $redis }}, key: redis-password}
{{- end }}
{{- end }}
{{- end -}}

{{/* JWT settings of a service's ConfigMap (the key itself comes from the Secret). */}}
{{- define "nextcampus-chat.jwtSettings" -}}
{{- $settings := dict "jwt_issuer" .Values.jwt.issuer "jwt_audience" .Values.jwt.audience -}}
{{- if .Values.jwt.jwksUrl -}}
{{- $_ := set $settings "jwt_jwks_url" .Values.jwt.jwksUrl -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end -}}

{{/* NEXTCAMPUS_DEFAULT_* of the chat service and the operator: one source, so both agree. */}}
{{- define "nextcampus-chat.policyDefaults" -}}
default_ttl_seconds: {{ .Values.policyDefaults.ttlSeconds }}
default_max_length: {{ .Values.policyDefaults.maxLength }}
default_rate_limit_messages: {{ .Values.policyDefaults.rateLimitMessages }}
default_rate_limit_seconds: {{ .Values.policyDefaults.rateLimitSeconds }}
default_edit_window_seconds: {{ .Values.policyDefaults.editWindowSeconds }}
{{- end -}}

{{/* Fails the render when a pod's grace period cannot hold its preStop and shutdown. */}}
{{- define "nextcampus-chat.checkGrace" -}}
{{- $budget := add .values.preStopSeconds .values.shutdownGraceSeconds -}}
{{- if le (int .values.terminationGracePeriodSeconds) (int $budget) -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must exceed preStopSeconds + shutdownGraceSeconds (%v): the pod would be killed mid-shutdown" .component .values.terminationGracePeriodSeconds $budget) -}}
{{- end -}}
{{- end -}}

{{/* PodDisruptionBudget of a component: (dict "root" $ "component" "chat" "values" .Values.chat). */}}
{{- define "nextcampus-chat.pdb" -}}
{{- if .values.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "nextcampus-chat.componentName" . }}
  labels:
    {{- include "nextcampus-chat.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "nextcampus-chat.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* HorizontalPodAutoscaler of a component's Deployment, on CPU. */}}
{{- define "nextcampus-chat.hpa" -}}
{{- if .values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "nextcampus-chat.componentName" . }}
  labels:
    {{- include "nextcampus-chat.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "nextcampus-chat.componentName" . }}
  minReplicas: {{ .values.autoscaling.minReplicas }}
  maxReplicas: {{ .values.autoscaling.maxReplicas }}
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ .values.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    # Streaming pods hand their clients to others when they go: scale in slowly.
    scaleDown:
      stabilizationWindowSeconds: 300
      policies:
      - {type: Pods, value: 1, periodSeconds: 60}
{{- end }}
{{- end -}}

{{/* ServiceMonitor of a component's metrics port: (dict "root" $ "component" "chat" "port" "metrics" "path" "/metrics"). */}}
{{- define "nextcampus-chat.serviceMonitor" -}}
{{- if .root.Values.monitoring.serviceMonitors.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "nextcampus-chat.componentName" . }}
  labels:
    {{- include "nextcampus-chat.componentLabels" . | nindent 4 }}
    {{- with .root.Values.monitoring.serviceMonitors.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "nextcampus-chat.selectorLabels" . | nindent 6 }}
      {{- with .service }}
      nextcampus.io/service: {{ . }}
      {{- end }}
  endpoints:
  - port: {{ .port }}
    path: {{ .path | default "/metrics" }}
    interval: {{ .root.Values.monitoring.serviceMonitors.interval }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy letting `from` peers reach `ports` of a component, and metrics scrapers its metrics port:
(dict "root" $ "component" "chat" "rules" (list (dict "from" … "ports" …)) "metricsPort" 9100). */}}
{{- define "nextcampus-chat.networkPolicy" -}}
{{- if .root.Values.networkPolicies.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "nextcampus-chat.componentName" . }}
  labels:
    {{- include "nextcampus-chat.componentLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "nextcampus-chat.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress]
  ingress:
  {{- range .rules }}
  - ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
    {{- with .from }}
    from:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- end }}
  {{- if .metricsPort }}
  - from:
      {{- toYaml .root.Values.networkPolicies.metricsFrom | nindent 6 }}
    ports:
    - {protocol: TCP, port: {{ .metricsPort }}}
  {{- end }}
{{- end }}
{{- end -}}

{{/* A NetworkPolicy peer: the pods of one of our components. */}}
{{- define "nextcampus-chat.peer" -}}
podSelector:
  matchLabels:
    {{- include "nextcampus-chat.selectorLabels" . | nindent 4 }}
{{- end -}}
