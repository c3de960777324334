{{/* Names, labels and the addresses every template shares. */}}

{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name, at most 40 characters so that "<fullname>-control-headless" stays a valid name. */}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end }}

{{/* Object names. */}}
{{- define "switchboard.controlName" -}}{{ include "switchboard.fullname" . }}-control{{- end }}
{{- define "switchboard.headlessName" -}}{{ include "switchboard.fullname" . }}-control-headless{{- end }}
{{- define "switchboard.edgeName" -}}{{ include "switchboard.fullname" . }}-edge{{- end }}
{{- define "switchboard.internalName" -}}{{ include "switchboard.fullname" . }}-internal{{- end }}

{{- define "switchboard.secretName" -}}
{{- default (include "switchboard.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* DNS suffix of the voters: <headless>.<namespace>.svc.<clusterDomain> */}}
{{- define "switchboard.peerDomain" -}}
{{- printf "%s.%s.svc.%s" (include "switchboard.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* The initial voters: 1=<sts>-0.<peerDomain>:7001,2=<sts>-1...; node id = ordinal + 1. */}}
{{- define "switchboard.voters" -}}
{{- $sts := include "switchboard.controlName" . }}
{{- $domain := include "switchboard.peerDomain" . }}
{{- $voters := list }}
{{- range $i := until (int .Values.control.replicas) }}
{{- $voters = append $voters (printf "%d=%s-%d.%s:7001" (add1 $i) $sts $i $domain) }}
{{- end }}
{{- join "," $voters }}
{{- end }}

{{/* Every voter's gRPC address, for edge nodes to join through (tried in turn). */}}
{{- define "switchboard.joinAddresses" -}}
{{- $sts := include "switchboard.controlName" . }}
{{- $domain := include "switchboard.peerDomain" . }}
{{- $addresses := list }}
{{- range $i := until (int .Values.control.replicas) }}
{{- $addresses = append $addresses (printf "%s-%d.%s:7001" $sts $i $domain) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}

{{/* The public endpoint (see `endpoint` in values.yaml). */}}
{{- define "switchboard.endpoint" -}}
{{- if .Values.endpoint }}
{{- .Values.endpoint | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}{{ if has $host .hosts }}{{ $tls = true }}{{ end }}{{ end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- else }}
{{- printf "%s://%s.%s.svc.%s:%d" (ternary "https" "http" (not (empty .Values.tls.existingSecret))) (include "switchboard.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.service.port) }}
{{- end }}
{{- end }}

{{/* The name every node certificate carries with mutual TLS between nodes. */}}
{{- define "switchboard.clusterTlsName" -}}
{{- .Values.clusterTls.serverName | default (printf "%s-node" (include "switchboard.fullname" .)) }}
{{- end }}

{{- define "switchboard.terminationGracePeriodSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.config.shutdownGrace .Values.terminationMarginSeconds }}
{{- end }}

{{/* Anti-affinity preset for one component ("control" or "edge"). */}}
{{- define "switchboard.affinity" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
{{- if $values.affinity }}
{{- toYaml $values.affinity }}
{{- else if ne $values.antiAffinity "none" }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (dict "app.kubernetes.io/name" (include "switchboard.name" $root) "app.kubernetes.io/instance" $root.Release.Name "app.kubernetes.io/component" .component)) }}
podAntiAffinity:
{{- if eq $values.antiAffinity "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    {{- toYaml (list $term) | nindent 4 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pod template shared by voters and edges. Arguments: root (the chart context) and
component ("control" or "edge").
*/}}
{{- define "switchboard.podSpec" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $values := index $root.Values $component }}
{{- $peerDomain := include "switchboard.peerDomain" $root -}}
serviceAccountName: {{ include "switchboard.serviceAccountName" $root }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ include "switchboard.terminationGracePeriodSeconds" $root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with (include "switchboard.affinity" (dict "root" $root "component" $component) | trim) }}
affinity:
  {{- . | nindent 2 }}
{{- end }}
{{- with $values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: switchboard
    image: {{ include "switchboard.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command:
      - /usr/local/bin/switchboard
    args:
      - serve
    env:
      - name: POD_NAME
        valueFrom:
          fieldRef:
            fieldPath: metadata.name
      - name: POD_NAMESPACE
        valueFrom:
          fieldRef:
            fieldPath: metadata.namespace
      - name: POD_IP
        valueFrom:
          fieldRef:
            fieldPath: status.podIP
      - name: SWITCHBOARD_CONFIG
        value: /etc/switchboard/config/switchboard.toml
      - name: SWITCHBOARD_LISTEN
        value: "0.0.0.0:8080"
      - name: SWITCHBOARD_INTERNAL_LISTEN
        value: "0.0.0.0:9090"
      - name: SWITCHBOARD_DATA_DIR
        value: /var/lib/switchboard
      - name: SWITCHBOARD_ACCESS_KEY_FILE
        value: /etc/switchboard/secret/access-keys
      {{- if $root.Values.tls.existingSecret }}
      - name: SWITCHBOARD_TLS_CERT
        value: /etc/switchboard/tls/tls.crt
      - name: SWITCHBOARD_TLS_KEY
        value: /etc/switchboard/tls/tls.key
      {{- end }}
      {{- if eq $root.Values.engine "redis" }}
      {{- /* A stateless node of the Redis engine: Redis hands out its node id; other nodes
      forward its clients' requests to its pod address. */}}
      - name: SWITCHBOARD_ADVERTISE_HTTP
        value: "$(POD_IP):8080"
      {{- if $root.Values.redis.existingSecret }}
      - name: SWITCHBOARD_REDIS_PASSWORD_FILE
        value: /etc/switchboard/redis/password
      {{- end }}
      {{- if $root.Values.redis.caExistingSecret }}
      - name: SWITCHBOARD_REDIS_CA_FILE
        value: /etc/switchboard/redis-ca/ca.crt
      {{- end }}
      {{- else }}
      - name: SWITCHBOARD_GRPC_LISTEN
        value: "0.0.0.0:7001"
      - name: SWITCHBOARD_CLUSTER_SECRET
        valueFrom:
          secretKeyRef:
            name: {{ include "switchboard.secretName" $root }}
            key: {{ $root.Values.auth.clusterSecretKey }}
      {{- if $root.Values.clusterTls.existingSecret }}
      - name: SWITCHBOARD_CLUSTER_TLS_CERT
        value: /etc/switchboard/cluster-tls/tls.crt
      - name: SWITCHBOARD_CLUSTER_TLS_KEY
        value: /etc/switchboard/cluster-tls/tls.key
      - name: SWITCHBOARD_CLUSTER_CA
        value: /etc/switchboard/cluster-tls/ca.crt
      - name: SWITCHBOARD_CLUSTER_TLS_NAME
        value: {{ include "switchboard.clusterTlsName" $root | quote }}
      {{- end }}
      {{- end }}
      {{- if eq $root.Values.engine "redis" }}
      {{- else if eq $component "control" }}
      - name: SWITCHBOARD_ROLE
        value: {{ $values.role }}
      - name: SWITCHBOARD_NODE_ID
        value: ordinal
      - name: SWITCHBOARD_ADVERTISE
        value: "$(POD_NAME).{{ $peerDomain }}:7001"
      - name: SWITCHBOARD_ADVERTISE_HTTP
        value: "$(POD_NAME).{{ $peerDomain }}:8080"
      - name: SWITCHBOARD_VOTERS
        value: {{ include "switchboard.voters" $root | quote }}
      {{- else }}
      - name: SWITCHBOARD_ROLE
        value: edge
      - name: SWITCHBOARD_NODE_ID
        value: auto
      - name: SWITCHBOARD_ADVERTISE
        value: "$(POD_IP):7001"
      - name: SWITCHBOARD_ADVERTISE_HTTP
        value: "$(POD_IP):8080"
      - name: SWITCHBOARD_JOIN
        value: {{ include "switchboard.joinAddresses" $root | quote }}
      {{- end }}
      {{- with $root.Values.config.logLevel }}
      - name: SWITCHBOARD_LOG
        value: {{ . | quote }}
      {{- end }}
      {{- with $values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    ports:
      - name: http
        containerPort: 8080
        protocol: TCP
      {{- if eq $root.Values.engine "raft" }}
      - name: grpc
        containerPort: 7001
        protocol: TCP
      {{- end }}
      - name: internal
        containerPort: 9090
        protocol: TCP
    livenessProbe:
      httpGet:
        path: /healthz
        port: internal
      {{- toYaml $root.Values.probes.liveness | nindent 6 }}
    readinessProbe:
      httpGet:
        path: /readyz
        port: internal
      {{- toYaml $root.Values.probes.readiness | nindent 6 }}
    {{- if gt (int $root.Values.preStopSleepSeconds) 0 }}
    lifecycle:
      preStop:
        exec:
          command:
            - /bin/sleep
            - {{ $root.Values.preStopSleepSeconds | quote }}
    {{- end }}
    resources:
      {{- toYaml $values.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/switchboard/config
        readOnly: true
      - name: secret
        mountPath: /etc/switchboard/secret
        readOnly: true
      - name: data
        mountPath: /var/lib/switchboard
      - name: tmp
        mountPath: /tmp
      {{- if $root.Values.tls.existingSecret }}
      - name: tls
        mountPath: /etc/switchboard/tls
        readOnly: true
      {{- end }}
      {{- if and (eq $root.Values.engine "raft") $root.Values.clusterTls.existingSecret }}
      - name: cluster-tls
        mountPath: /etc/switchboard/cluster-tls
        readOnly: true
      {{- end }}
      {{- if and (eq $root.Values.engine "redis") $root.Values.redis.existingSecret }}
      - name: redis-password
        mountPath: /etc/switchboard/redis
        readOnly: true
      {{- end }}
      {{- if and (eq $root.Values.engine "redis") $root.Values.redis.caExistingSecret }}
      - name: redis-ca
        mountPath: /etc/switchboard/redis-ca
        readOnly: true
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "switchboard.fullname" $root }}
  # A directory mount (no subPath), so that the kubelet updates the file when the Secret
  # changes and the node reloads its access keys.
  - name: secret
    secret:
      secretName: {{ include "switchboard.secretName" $root }}
      defaultMode: 0440
      items:
        - key: {{ $root.Values.auth.accessKeysKey }}
          path: access-keys
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- /* Directory mounts (no subPath): the kubelet updates the files when the Secret is
  renewed, and the node reloads the public certificate. */}}
  {{- if $root.Values.tls.existingSecret }}
  - name: tls
    secret:
      secretName: {{ $root.Values.tls.existingSecret }}
      defaultMode: 0440
      items:
        - key: tls.crt
          path: tls.crt
        - key: tls.key
          path: tls.key
  {{- end }}
  {{- if and (eq $root.Values.engine "raft") $root.Values.clusterTls.existingSecret }}
  - name: cluster-tls
    secret:
      secretName: {{ $root.Values.clusterTls.existingSecret }}
      defaultMode: 0440
      items:
        - key: tls.crt
          path: tls.crt
        - key: tls.key
          path: tls.key
        - key: ca.crt
          path: ca.crt
  {{- end }}
  {{- if and (eq $root.Values.engine "redis") $root.Values.redis.existingSecret }}
  - name: redis-password
    secret:
      secretName: {{ $root.Values.redis.existingSecret }}
      defaultMode: 0440
      items:
        - key: {{ $root.Values.redis.passwordKey }}
          path: password
  {{- end }}
  {{- if and (eq $root.Values.engine "redis") $root.Values.redis.caExistingSecret }}
  - name: redis-ca
    secret:
      secretName: {{ $root.Values.redis.caExistingSecret }}
      defaultMode: 0440
      items:
        - key: {{ $root.Values.redis.caKey }}
          path: ca.crt
  {{- end }}
  {{- if or (eq $component "edge") (not $values.persistence.enabled) }}
  - name: data
    emptyDir:
      sizeLimit: 1Gi
  {{- end }}
{{- end }}
