{{/* Names: <fullname>-<component>, at most 63 characters. */}}
{{- define "guildnet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "guildnet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "guildnet.operator.name" -}}{{ include "guildnet.fullname" . }}-operator{{- end -}}
{{- define "guildnet.webhook.name" -}}{{ include "guildnet.fullname" . }}-webhook{{- end -}}
{{- define "guildnet.proxy.name" -}}{{ include "guildnet.fullname" . }}-proxy{{- end -}}
{{/* The kubeconfigs the operator hands the proxy for clusters with network: APIServerProxy. */}}
{{- define "guildnet.clusterCredentials.name" -}}{{ include "guildnet.fullname" . }}-cluster-credentials{{- end -}}
{{/* The GuildDatabases' admin passwords the operator hands the proxy for the database API. */}}
{{- define "guildnet.databaseCredentials.name" -}}{{ include "guildnet.fullname" . }}-database-credentials{{- end -}}

{{/* The webhook configurations' name is fixed in guildnet-webhook, which keeps their CA bundle. */}}
{{- define "guildnet.webhook.configurationName" -}}guildnet-webhook{{- end -}}

{{- define "guildnet.webhook.secretName" -}}
{{- default (printf "%s-tls" (include "guildnet.webhook.name" .)) .Values.webhook.certificates.secretName -}}
{{- end -}}

{{- define "guildnet.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "guildnet.labels" -}}
app.kubernetes.io/name: {{ include "guildnet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
app.kubernetes.io/part-of: guildnet
app.kubernetes.io/managed-by: {{ default .Release.Service .Values.managedBy }}
{{- if not .Values.managedBy }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of a component's objects; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "guildnet.componentLabels" -}}
{{ include "guildnet.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "guildnet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guildnet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The user names the components' ServiceAccounts authenticate as. */}}
{{- define "guildnet.serviceAccountUser" -}}
system:serviceaccount:{{ .ctx.Release.Namespace }}:{{ .name }}
{{- end -}}

{{/*
Pod Security `restricted`, the same hardening as a workspace: non-root (distroless's
nonroot uid), no privilege escalation, no capabilities, read-only root filesystem,
RuntimeDefault seccomp. Deliberately not configurable.
*/}}
{{- define "guildnet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "guildnet.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
What every component's pod spec shares; call with (dict "ctx" $ "component" "operator"
"values" .Values.operator).
*/}}
{{- define "guildnet.podScheduling" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else }}
# Replicas on different nodes where possible, so one node's loss leaves the rest serving.
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "guildnet.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/* How the API server reaches the webhook; call with (dict "ctx" $ "path" "/mutate"). */}}
{{- define "guildnet.webhook.clientConfig" -}}
{{- if .ctx.Values.webhook.url -}}
url: {{ printf "%s%s" (trimSuffix "/" .ctx.Values.webhook.url) .path }}
{{- else -}}
service:
  namespace: {{ .ctx.Release.Namespace }}
  name: {{ include "guildnet.webhook.name" .ctx }}
  path: {{ .path }}
  port: 443
{{- end -}}
{{- end -}}
{{- define "guildnet.webhook.common" -}}
admissionReviewVersions: [v1]
failurePolicy: Fail
matchPolicy: Equivalent
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: [kube-system, {{ .Release.Namespace }}]
sideEffects: None
timeoutSeconds: 5
{{- end -}}
