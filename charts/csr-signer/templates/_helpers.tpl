{{/* Chart name, overridable. */}}
{{- define "csr-signer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>" unless the release name already contains the chart name; max 63 chars (DNS label). */}}
{{- define "csr-signer.fullname" -}}
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

{{- define "csr-signer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "csr-signer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "csr-signer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "csr-signer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "csr-signer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "csr-signer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "csr-signer.leaseName" -}}
{{- default (include "csr-signer.fullname" .) .Values.controller.leaderElection.leaseName }}
{{- end }}

{{- define "csr-signer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding signer number .index's CA. Call with (dict "root" $ "index" $i "signer" $s).
*/}}
{{- define "csr-signer.caSecretName" -}}
{{- if .signer.ca.create }}
{{- printf "%s-ca-%d" (include "csr-signer.fullname" .root | trunc 56 | trimSuffix "-") (int .index) }}
{{- else }}
{{- required (printf "signers[%d].ca.existingSecret is required unless ca.create is true" (int .index)) .signer.ca.existingSecret }}
{{- end }}
{{- end }}

{{/* Key in the CA Secret that holds the intermediate chain ("" = none). */}}
{{- define "csr-signer.chainKey" -}}
{{- if .ca.chainKey }}
{{- .ca.chainKey }}
{{- else if and .ca.create .ca.chain }}
{{- "chain.crt" }}
{{- end }}
{{- end }}

{{/* The configured signerNames, as a YAML flow list; also the place that rejects duplicates. */}}
{{- define "csr-signer.signerNames" -}}
{{- $names := list }}
{{- range .Values.signers }}
{{- if has .name $names }}
{{- fail (printf "signer %q is configured twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* Guards evaluated by every workload template. */}}
{{- define "csr-signer.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.controller.leaderElection.enabled) }}
{{- fail "replicaCount > 1 requires controller.leaderElection.enabled: two active signers would race on every CSR" }}
{{- end }}
{{- if lt (len .Values.signers) 1 }}
{{- fail "at least one signer is required" }}
{{- end }}
{{- $cm := .Values.trustBundles.configMaps }}
{{- if and $cm.enabled (not (or $cm.namespaceSelector.matchLabels $cm.namespaceSelector.matchExpressions)) }}
{{- fail "trustBundles.configMaps.namespaceSelector: give matchLabels or matchExpressions (the namespaces that get the trust ConfigMap); it is required when trustBundles.configMaps.enabled is true" }}
{{- end }}
{{- range $i, $s := .Values.signers }}
{{- $names := list }}
{{- range $j, $o := $s.otherCas }}
{{- /* The name is the CA's directory in the pod (and its metric label): two entries would share it. */}}
{{- if has $o.name $names }}
{{- fail (printf "signers[%d].otherCas[%d].name: %q is listed twice for this signer" (int $i) (int $j) $o.name) }}
{{- end }}
{{- if eq $o.name (default "active" $s.ca.name) }}
{{- fail (printf "signers[%d].otherCas[%d].name: %q is the signing CA's name (ca.name) for this signer" (int $i) (int $j) $o.name) }}
{{- end }}
{{- $names = append $names $o.name }}
{{- if eq (include "csr-signer.otherCaCertKey" $o) (default "" $o.chainKey) }}
{{- fail (printf "signers[%d].otherCas[%d]: certKey and chainKey name the same key %q" (int $i) (int $j) $o.chainKey) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Where the certificates of a CA the signer trusts but does not sign with (signers[.index].otherCas entry
.other) are mounted: one directory per entry, named after it, holding only ca.crt and chain.crt. Call with
(dict "index" $i "other" $o).
*/}}
{{- define "csr-signer.otherCaDir" -}}
{{- printf "/etc/csr-signer/other-cas/%d/%s" (int .index) .other.name }}
{{- end }}

{{/* Key in an otherCas entry's Secret or ConfigMap that holds the CA certificate. */}}
{{- define "csr-signer.otherCaCertKey" -}}
{{- default "tls.crt" .certKey }}
{{- end }}

{{/* Non-empty when at least one signer's CA Secret is created from values. */}}
{{- define "csr-signer.anyCreatedCa" -}}
{{- range .Values.signers }}{{- if .ca.create }}yes{{- end }}{{- end }}
{{- end }}
