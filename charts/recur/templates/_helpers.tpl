{{/* Chart name, at most 63 characters (a DNS label). */}}
{{- define "recur.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release name contains it. */}}
{{- define "recur.fullname" -}}
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

{{/* Name of cluster-scoped objects: they are shared by every namespace, so the release namespace
is part of it (two releases of the same name in two namespaces must not collide). */}}
{{- define "recur.clusterName" -}}
{{- printf "%s-%s" (include "recur.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "recur.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels selecting the operator pods; never change them after a release (selectors are immutable). */}}
{{- define "recur.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recur.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "recur.labels" -}}
helm.sh/chart: {{ include "recur.chart" . }}
{{ include "recur.selectorLabels" . }}
app.kubernetes.io/version: {{ include "recur.tag" . | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: recur
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* metadata.annotations of every object (commonAnnotations), or nothing. */}}
{{- define "recur.annotations" -}}
{{- with .Values.commonAnnotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "recur.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "recur.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (include "recur.tag" .) }}
{{- if .Values.image.digest }}
{{- $ref = printf "%s@%s" $ref .Values.image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{- define "recur.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "recur.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "recur.leaseName" -}}
{{- default (printf "%s-leader" (include "recur.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The Leases the operator holds: the one leader's, or each shard's and member slot's. */}}
{{- define "recur.leaseNames" -}}
{{- $name := include "recur.leaseName" . }}
{{- $shards := int .Values.leaderElection.shards }}
{{- if gt $shards 1 }}
{{- range $k := until $shards }}
- {{ printf "%s-shard-%d" $name $k | quote }}
- {{ printf "%s-member-%d" $name $k | quote }}
{{- end }}
{{- else }}
- {{ $name | quote }}
{{- end }}
{{- end }}

{{- define "recur.daprAppId" -}}
{{- default (include "recur.fullname" .) .Values.dapr.appId }}
{{- end }}

{{/* The Dapr Configuration the chart renders for completion.denyInvocations. */}}
{{- define "recur.daprConfig" -}}
{{- printf "%s-dapr" (include "recur.fullname" .) }}
{{- end }}

{{/* Refuses combinations the schema cannot express. */}}
{{- define "recur.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: without a leader every replica would deliver every occurrence" }}
{{- end }}
{{- if and (gt (int .Values.leaderElection.shards) 1) (not .Values.leaderElection.enabled) }}
{{- fail "leaderElection.shards > 1 needs leaderElection.enabled: the shards are Leases" }}
{{- end }}
{{- with .Values.completion }}
{{- if .enabled }}
{{- if not $.Values.dapr.enabled }}
{{- fail "completion.enabled needs dapr.enabled: the completion events come from the operator's Dapr sidecar" }}
{{- end }}
{{- if and (gt (int $.Values.dapr.appPort) 0) (ne (int $.Values.dapr.appPort) (int .port)) }}
{{- fail "completion.enabled makes completion.port the sidecar's app port: set dapr.appPort to 0 (or to completion.port)" }}
{{- end }}
{{- if or (eq (int .port) 8080) (and $.Values.webhook.enabled (eq (int .port) (int $.Values.webhook.port))) }}
{{- fail "completion.port must differ from the probe and metrics port (8080) and webhook.port" }}
{{- end }}
{{- if and .denyInvocations $.Values.dapr.config }}
{{- fail "completion.denyInvocations renders the sidecar's Dapr Configuration, but dapr.config names another: deny service invocations of the operator in that one (accessControl.defaultAction: deny) and set completion.denyInvocations=false" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The rules the operator needs on its resources, in the watched namespace(s). */}}
{{- define "recur.watchRules" -}}
# Watch tasks (the controller's informer) and read one when a reminder names it (taskRef).
# patch: only to suspend a task whose failurePolicy.suspendAfter was reached (spec.suspend and
# spec.suspendReason, guarded by the generation it judged); no update, create or delete.
- apiGroups: ["recur.dev"]
  resources: ["recurringtasks"]
  verbs: ["get", "list", "watch", "patch"]
# The guarded status write (JSON patch on the status subresource).
- apiGroups: ["recur.dev"]
  resources: ["recurringtasks/status"]
  verbs: ["patch"]
# Watch reminders; create them (server-side apply of a task's reminders needs create and patch),
# list them by task label and delete sent ones beyond the task's historyLimit.
- apiGroups: ["recur.dev"]
  resources: ["reminders"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["recur.dev"]
  resources: ["reminders/status"]
  verbs: ["patch"]
# Watch backfills; patch one to add its ownerReference to the task (the garbage collector then
# deletes it with the task) and delete one ttlSecondsAfterFinished after it finished.
- apiGroups: ["recur.dev"]
  resources: ["backfills"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["recur.dev"]
  resources: ["backfills/status"]
  verbs: ["patch"]
# Events on the objects (kube's Recorder creates events.k8s.io/v1 Events and patches repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Pod annotations: Dapr's (from dapr.*), then dapr.annotations, then podAnnotations; later
ones win, so no key appears twice. */}}
{{- define "recur.podAnnotations" -}}
{{- $a := dict }}
{{- if .Values.dapr.enabled }}
{{- $_ := set $a "dapr.io/enabled" "true" }}
{{- $_ := set $a "dapr.io/app-id" (include "recur.daprAppId" .) }}
{{- if gt (int .Values.dapr.appPort) 0 }}
{{- $_ := set $a "dapr.io/app-port" (toString .Values.dapr.appPort) }}
{{- end }}
{{- if .Values.completion.enabled }}
{{- $_ := set $a "dapr.io/app-port" (toString .Values.completion.port) }}
{{- end }}
{{- with .Values.dapr.apiTokenSecret }}
{{- $_ := set $a "dapr.io/api-token-secret" . }}
{{- end }}
{{- with .Values.dapr.config }}
{{- $_ := set $a "dapr.io/config" . }}
{{- end }}
{{- if and .Values.completion.enabled .Values.completion.denyInvocations }}
{{- $_ := set $a "dapr.io/config" (include "recur.daprConfig" .) }}
{{- end }}
{{- $_ := set $a "dapr.io/log-level" .Values.dapr.logLevel }}
{{- if eq .Values.operator.logFormat "json" }}
{{- $_ := set $a "dapr.io/log-as-json" "true" }}
{{- end }}
{{- range $k, $v := .Values.dapr.annotations }}
{{- $_ := set $a $k $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .Values.podAnnotations }}
{{- $_ := set $a $k $v }}
{{- end }}
{{- if $a }}
{{- toYaml $a }}
{{- end }}
{{- end }}

{{/* The webhook's Service (a DNS label, so at most 63 characters). */}}
{{- define "recur.webhookService" -}}
{{- printf "%s-webhook" (include "recur.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* The Secret of the webhook's serving certificate (self-managed, or cert-manager's). */}}
{{- define "recur.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "recur.fullname" .) }}
{{- end }}

{{/* The ValidatingWebhookConfiguration: cluster-scoped, so named like the ClusterRole. */}}
{{- define "recur.webhookConfiguration" -}}
{{- include "recur.clusterName" . }}
{{- end }}

{{/* Whether the operator manages its own certificate (and so needs rights on its Secret and on
the configuration's caBundle). */}}
{{- define "recur.webhookSelfManaged" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.certManager.enabled) }}true{{ end }}
{{- end }}

{{/* Read-only rights of the tenancy checks: every TenantPolicy and every namespace's labels,
whatever namespaces are watched (policies are cluster-scoped and select namespaces by label). */}}
{{- define "recur.tenancyRules" -}}
- apiGroups: ["recur.dev"]
  resources: ["tenantpolicies"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
