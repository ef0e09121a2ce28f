{{/* Names, labels and shared fragments of the Baton chart. */}}

{{- define "baton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix; the SMTP Service carries exactly this name (`baton` for release `baton`). */}}
{{- define "baton.fullname" -}}
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

{{- define "baton.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "baton.labels" -}}
helm.sh/chart: {{ include "baton.chart" . }}
app.kubernetes.io/name: baton
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: baton
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "ingress"). */}}
{{- define "baton.selectorLabels" -}}
app.kubernetes.io/name: baton
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's objects: (dict "ctx" $ "component" "ingress"). */}}
{{- define "baton.componentLabels" -}}
{{ include "baton.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The Baton image reference. */}}
{{- define "baton.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
NATS URL: the bundled NATS chart's client Service (named like that chart's `nats.fullname`),
or `externalNats.url`.
*/}}
{{/*
The fully qualified name workers announce (EHLO, DSN Reporting-MTA) for pools without egress
identities or spec.ehloName: workers.hostname, else ingress.hostname, else the ingress
Service's cluster name. Never a pod name.
*/}}
{{- define "baton.workerHostname" -}}
{{- if .Values.workers.hostname }}
{{- .Values.workers.hostname }}
{{- else if .Values.ingress.hostname }}
{{- .Values.ingress.hostname }}
{{- else }}
{{- printf "%s.%s.svc.cluster.local" (include "baton.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "baton.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- $name := "" }}
{{- if .Values.nats.fullnameOverride }}
{{- $name = .Values.nats.fullnameOverride }}
{{- else if contains (default "nats" .Values.nats.nameOverride) .Release.Name }}
{{- $name = .Release.Name }}
{{- else }}
{{- $name = printf "%s-%s" .Release.Name (default "nats" .Values.nats.nameOverride) }}
{{- end }}
{{- printf "nats://%s.%s.svc:4222" ($name | trunc 63 | trimSuffix "-") (default .Release.Namespace .Values.nats.namespaceOverride) }}
{{- else if .Values.externalNats.url }}
{{- .Values.externalNats.url }}
{{- else }}
{{- fail "set externalNats.url when nats.enabled is false" }}
{{- end }}
{{- end }}

{{/*
The TCP ports of externalNats.url (comma-separated URLs; 4222 where one names none), as a JSON
array, for the webhooks pods' egress NetworkPolicy.
*/}}
{{- define "baton.natsPorts" -}}
{{- $ports := list }}
{{- range (splitList "," .Values.externalNats.url) }}
{{- $u := trim . }}
{{- if $u }}
{{- $hostport := regexReplaceAll "^[A-Za-z][A-Za-z0-9+.-]*://([^/@]*@)?([^/?#]*).*$" $u "${2}" }}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" | default "4222" }}
{{- $ports = append $ports (int $port) }}
{{- end }}
{{- end }}
{{- $ports | uniq | toJson }}
{{- end }}

{{- define "baton.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "baton.fullname" .)) .Values.operator.serviceAccount.name }}
{{- end }}

{{/*
The keyring Secret (keys that seal the config snapshot's secrets). The operator creates it with
one random key when it does not exist, so no key material is ever rendered.
*/}}
{{- define "baton.keyringSecretName" -}}
{{- default (printf "%s-keyring" (include "baton.fullname" .)) .Values.keyring.secretName }}
{{- end }}

{{- define "baton.ingress.tlsSecretName" -}}
{{- default (printf "%s-ingress-tls" (include "baton.fullname" .)) .Values.ingress.tls.secretName }}
{{- end }}

{{/* Topology spread constraints with a default labelSelector: (dict "list" ... "ctx" $ "component" "x"). */}}
{{- define "baton.topologySpread" -}}
{{- $out := list }}
{{- range .list }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "baton.selectorLabels" (dict "ctx" $.ctx "component" $.component) | fromYaml)) }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Env shared by Baton containers: pod identity via the downward API. */}}
{{- define "baton.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
# Runtime threads = the container's CPU request in whole CPUs, rounded up (0 when none is set:
# one per CPU of the node).
- name: BATON_RUNTIME_THREADS
  valueFrom:
    resourceFieldRef:
      resource: requests.cpu
      divisor: "1"
{{- end }}

{{/* Probes on the metrics port. */}}
{{- define "baton.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 3
{{- end }}

{{/*
TLS to NATS (natsClientTls): the env that points a Baton process at the mounted Secret, the
volume mount and the volume. Empty when natsClientTls is off.
*/}}
{{- define "baton.natsTls.env" -}}
{{- with .Values.natsClientTls }}
{{- if .enabled }}
{{- if not .secretName }}
{{- fail "natsClientTls.enabled needs natsClientTls.secretName" }}
{{- end }}
- name: BATON_NATS_CA
  value: /etc/baton/nats-tls/ca.crt
{{- if .clientCert }}
- name: BATON_NATS_CERT
  value: /etc/baton/nats-tls/tls.crt
- name: BATON_NATS_KEY
  value: /etc/baton/nats-tls/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "baton.natsTls.volumeMount" -}}
{{- if .Values.natsClientTls.enabled }}
- name: nats-tls
  mountPath: /etc/baton/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "baton.natsTls.volume" -}}
{{- if .Values.natsClientTls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ .Values.natsClientTls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
