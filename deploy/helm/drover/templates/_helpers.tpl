{{/*
Chart name, truncated to 63 characters (the limit of a DNS label and of a label value).
*/}}
{{- define "drover.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: RELEASE-drover, or RELEASE alone when it already contains the chart name.
Truncated to 63 characters.
*/}}
{{- define "drover.fullname" -}}
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

{{/*
A name derived from the full name with a suffix, still within 63 characters: the full name is
cut so that the suffix survives. Call with (dict "root" $ "suffix" "headless").
*/}}
{{- define "drover.suffixedName" -}}
{{- $suffix := printf "-%s" .suffix }}
{{- $base := include "drover.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s%s" $base $suffix }}
{{- end }}

{{- define "drover.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels (the recommended app.kubernetes.io/* set).
*/}}
{{- define "drover.labels" -}}
helm.sh/chart: {{ include "drover.chart" . }}
{{ include "drover.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: drover
{{- end }}

{{- define "drover.selectorLabels" -}}
app.kubernetes.io/name: {{ include "drover.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "drover.coordinator.selectorLabels" -}}
{{ include "drover.selectorLabels" . }}
app.kubernetes.io/component: coordinator
{{- end }}

{{/*
Labels every agent pod of this release has, whatever its pool (used by NetworkPolicies).
*/}}
{{- define "drover.agent.commonSelectorLabels" -}}
{{ include "drover.selectorLabels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{/*
Selector labels of one pool. Call with (dict "root" $ "pool" $pool) where $pool comes from
"drover.agent.pool".
*/}}
{{- define "drover.agent.selectorLabels" -}}
{{ include "drover.agent.commonSelectorLabels" .root }}
drover/pool: {{ .pool.key | quote }}
{{- end }}

{{/*
Labels of one pool's objects: the common labels plus the pool's.
*/}}
{{- define "drover.agent.labels" -}}
{{ include "drover.labels" .root }}
app.kubernetes.io/component: agent
drover/pool: {{ .pool.key | quote }}
{{- end }}

{{- define "drover.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "drover.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; the tag defaults to the appVersion.
*/}}
{{- define "drover.image" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag | toString) }}
{{- end }}
{{- end }}

{{- define "drover.tlsEnabled" -}}
{{- if .Values.tls.existingSecret }}true{{ end }}
{{- end }}

{{- define "drover.httpScheme" -}}
{{- if .Values.tls.existingSecret }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
The URL agents dial: agents.coordinatorUrl, or this release's Service.
*/}}
{{- define "drover.coordinatorUrl" -}}
{{- if .Values.agents.coordinatorUrl }}
{{- .Values.agents.coordinatorUrl }}
{{- else }}
{{- $scheme := ternary "https" "http" (not (empty .Values.tls.existingSecret)) }}
{{- printf "%s://%s.%s.svc:%v" $scheme (include "drover.fullname" .) .Release.Namespace .Values.service.ports.grpc }}
{{- end }}
{{- end }}

{{/*
Render-time checks of combinations the schema cannot express. Included by every template that
depends on them, so `helm template` fails with a message saying what to set.
*/}}
{{- define "drover.validate" -}}
{{- if and (not .Values.auth.existingSecret) (not .Values.coordinator.insecureNoAuth) }}
{{- fail "\n\nThe coordinator needs tokens: it refuses to listen on 0.0.0.0 without them.\nSet auth.existingSecret to a Secret holding the token file (create tokens with `drover token new --name NAME --scopes agent`, then `kubectl create secret generic drover-auth --from-file=auth.yaml=FILE`),\nor set coordinator.insecureNoAuth=true to serve without authentication (--insecure-no-auth; only for a throwaway cluster)." }}
{{- end }}
{{- if and .Values.auth.existingSecret .Values.coordinator.insecureNoAuth }}
{{- fail "\n\nauth.existingSecret and coordinator.insecureNoAuth=true contradict each other: unset one of them." }}
{{- end }}
{{- if and .Values.tls.clientAuth (not .Values.tls.existingSecret) }}
{{- fail "\n\ntls.clientAuth=true needs tls.existingSecret (its ca.crt verifies the client certificates)." }}
{{- end }}
{{- $s3 := .Values.cache.s3 }}
{{- if and (not $s3.bucket) (or $s3.endpoint $s3.region $s3.prefix $s3.credentialsSecret) }}
{{- fail "\n\ncache.s3.endpoint, region, prefix and credentialsSecret only apply with cache.s3.bucket: set the bucket too." }}
{{- end }}
{{- range $key, $_ := .Values.agents.pools }}
{{- $pool := include "drover.agent.pool" (dict "root" $ "key" $key) | fromYaml }}
{{- if and (not $.Values.coordinator.insecureNoAuth) (not $.Values.agents.tokenSecret.name) }}
{{- fail (printf "\n\nagents.pools.%s: the agents need a token with the agent scope. Set agents.tokenSecret.name to a Secret holding it (kubectl create secret generic drover-agent-token --from-literal=token=TOKEN)." $key) }}
{{- end }}
{{- if and $.Values.tls.clientAuth (not $.Values.agents.clientCertSecret) }}
{{- fail (printf "\n\nagents.pools.%s: tls.clientAuth=true needs agents.clientCertSecret, a kubernetes.io/tls Secret with the agents' client certificate." $key) }}
{{- end }}
{{- if $pool.autoscaling.enabled }}
{{- if gt (int $pool.autoscaling.minReplicas) (int $pool.autoscaling.maxReplicas) }}
{{- fail (printf "\n\nagents.pools.%s: autoscaling minReplicas (%d) is above maxReplicas (%d)." $key (int $pool.autoscaling.minReplicas) (int $pool.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and (eq $.Values.autoscaling.mode "hpa") (lt (int $pool.autoscaling.minReplicas) 1) }}
{{- fail (printf "\n\nagents.pools.%s: autoscaling.mode=hpa cannot scale to zero (a HorizontalPodAutoscaler needs minReplicas >= 1 without the alpha HPAScaleToZero gate). Set minReplicas to 1 or use autoscaling.mode=keda." $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The effective settings of one agent pool: the pool's own values over the agents.* defaults.
Call with (dict "root" $ "key" NAME); use as (include ... | fromYaml).
Scalars and objects: the pool's value when it sets one. extraArgs/extraEnv/extraVolumes/
extraVolumeMounts: agents.* then the pool's. nodeSelector/podAnnotations/podLabels: merged.
*/}}
{{- define "drover.agent.pool" -}}
{{- $root := .root }}
{{- $a := $root.Values.agents }}
{{- $p := index $a.pools .key | default dict }}
{{- $as := $root.Values.autoscaling }}
{{- $pas := $p.autoscaling | default dict }}
{{- /* A pool naming its own repository inherits no tag or digest, which belong to another image. */}}
{{- $image := deepCopy $a.image }}
{{- with $p.image }}
{{- if .repository }}
{{- $image = merge (deepCopy .) (dict "tag" "" "digest" "" "pullPolicy" $a.image.pullPolicy) }}
{{- else }}
{{- $image = merge (deepCopy .) (deepCopy $a.image) }}
{{- end }}
{{- end }}
{{- $slots := int (ternary $p.slots $a.slots (hasKey $p "slots")) }}
{{- $tasksPerReplica := int (ternary $pas.tasksPerReplica $as.tasksPerReplica (hasKey $pas "tasksPerReplica")) }}
{{- if le $tasksPerReplica 0 }}{{ $tasksPerReplica = $slots }}{{ end }}
{{- $workspaces := merge (deepCopy ($p.workspaces | default dict)) (deepCopy $a.workspaces) }}
key: {{ .key | quote }}
name: {{ include "drover.suffixedName" (dict "root" $root "suffix" (printf "agent-%s" .key)) | quote }}
launchTemplate: {{ $p.launchTemplate | default .key | quote }}
replicas: {{ int (ternary $p.replicas $a.replicas (hasKey $p "replicas")) }}
slots: {{ $slots }}
image: {{ $image | toJson }}
command: {{ ternary $p.command $a.command (hasKey $p "command") | toJson }}
drainTimeout: {{ ternary $p.drainTimeout $a.drainTimeout (hasKey $p "drainTimeout") | quote }}
terminationGracePeriodSeconds: {{ int (ternary $p.terminationGracePeriodSeconds $a.terminationGracePeriodSeconds (hasKey $p "terminationGracePeriodSeconds")) }}
resources: {{ ternary $p.resources $a.resources (hasKey $p "resources") | toJson }}
nodeSelector: {{ merge (deepCopy ($p.nodeSelector | default dict)) (deepCopy $a.nodeSelector) | toJson }}
tolerations: {{ ternary $p.tolerations $a.tolerations (hasKey $p "tolerations") | toJson }}
affinity: {{ ternary $p.affinity $a.affinity (hasKey $p "affinity") | toJson }}
podAnnotations: {{ merge (deepCopy ($p.podAnnotations | default dict)) (deepCopy $a.podAnnotations) | toJson }}
podLabels: {{ merge (deepCopy ($p.podLabels | default dict)) (deepCopy $a.podLabels) | toJson }}
priorityClassName: {{ ternary $p.priorityClassName $a.priorityClassName (hasKey $p "priorityClassName") | quote }}
extraArgs: {{ concat $a.extraArgs ($p.extraArgs | default list) | toJson }}
extraEnv: {{ concat $a.extraEnv ($p.extraEnv | default list) | toJson }}
extraVolumes: {{ concat $a.extraVolumes ($p.extraVolumes | default list) | toJson }}
extraVolumeMounts: {{ concat $a.extraVolumeMounts ($p.extraVolumeMounts | default list) | toJson }}
workspaces: {{ $workspaces | toJson }}
initSteps: {{ $p.initSteps | default list | toJson }}
autoscaling:
  enabled: {{ and $as.enabled (ternary $pas.enabled true (hasKey $pas "enabled")) }}
  minReplicas: {{ int (ternary $pas.minReplicas $as.minReplicas (hasKey $pas "minReplicas")) }}
  maxReplicas: {{ int (ternary $pas.maxReplicas $as.maxReplicas (hasKey $pas "maxReplicas")) }}
  tasksPerReplica: {{ $tasksPerReplica }}
{{- end }}
