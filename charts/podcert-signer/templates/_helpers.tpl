{{/* Labels every object carries (kustomize's `labels` in manifests/kustomization.yaml). */}}
{{- define "podcert-signer.labels" -}}
app.kubernetes.io/name: podcert-signer
app.kubernetes.io/part-of: podcert-signer
{{- end -}}

{{/* The signer's settings, as manifests/config.env sets them (only those given). */}}
{{- define "podcert-signer.config" -}}
{{- $c := dict "PODCERT_SIGNER_NAME" .Values.signerName "PODCERT_TRUST_DOMAIN" .Values.trustDomain "PODCERT_LOG_FORMAT" .Values.log.format "PODCERT_LOG_LEVEL" .Values.log.level "PODCERT_CA_NAME_CONSTRAINTS" (toString .Values.ca.nameConstraints) -}}
{{- range $env, $value := dict "PODCERT_CA_KEY_TYPE" .Values.ca.keyType "PODCERT_CA_VALIDITY" .Values.ca.validity "PODCERT_CA_ROTATE_BEFORE" .Values.ca.rotateBefore "PODCERT_CA_PREVIEW_DELAY" .Values.ca.previewDelay "PODCERT_CA_PROPAGATION_DELAY" .Values.ca.propagationDelay "PODCERT_INTERMEDIATE_VALIDITY" .Values.ca.intermediateValidity "PODCERT_CA_PKCS11_MODULE" .Values.ca.pkcs11.module "PODCERT_CA_PKCS11_TOKEN_LABEL" .Values.ca.pkcs11.tokenLabel "PODCERT_CA_PKCS11_KEY_LABEL" .Values.ca.pkcs11.keyLabel "PODCERT_CA_PKCS11_PIN_FILE" .Values.ca.pkcs11.pinFile -}}
{{- if $value }}{{ $_ := set $c $env (toString $value) }}{{ end -}}
{{- end -}}
{{- with .Values.upstream.certManager -}}
{{- if .issuer -}}
{{- $_ := set $c "PODCERT_UPSTREAM_AUTHORITY" "cert-manager" -}}
{{- $_ := set $c "PODCERT_UPSTREAM_ISSUER" .issuer -}}
{{- $_ := set $c "PODCERT_UPSTREAM_ISSUER_KIND" .kind -}}
{{- $_ := set $c "PODCERT_UPSTREAM_ISSUER_GROUP" .group -}}
{{- end -}}
{{- end -}}
{{- if .Values.upstream.trustAnchorsConfigMap -}}
{{- $_ := set $c "PODCERT_UPSTREAM_TRUST_ANCHORS" "/etc/podcert-signer/upstream/roots.pem" -}}
{{- end -}}
{{- with .Values.upstream.vault -}}
{{- if .address -}}
{{- $_ := set $c "PODCERT_UPSTREAM_AUTHORITY" "vault" -}}
{{- $_ := set $c "PODCERT_UPSTREAM_VAULT_ADDRESS" .address -}}
{{- $_ := set $c "PODCERT_UPSTREAM_VAULT_CA_FILE" "/etc/podcert-signer/vault/ca.crt" -}}
{{- $_ := set $c "PODCERT_UPSTREAM_VAULT_PKI_MOUNT" .pkiMount -}}
{{- $_ := set $c "PODCERT_UPSTREAM_VAULT_AUTH_MOUNT" .authMount -}}
{{- $_ := set $c "PODCERT_UPSTREAM_VAULT_ROLE" .role -}}
{{- end -}}
{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/* A generated ConfigMap's name, as kustomize's configMapGenerator makes it: the name
     suffixed with kustomize's content hash (sha256 of {"data":…,"kind":"ConfigMap","name":""},
     10 hex digits with 0,1,3,a,e written g,h,k,m,t), so a changed setting rolls the
     Deployment exactly as with kustomize. Takes (dict "name" … "data" …). */}}
{{- define "podcert-signer.generatedName" -}}
{{- $hashed := dict "data" .data "kind" "ConfigMap" "name" "" -}}
{{- $h := toJson $hashed | sha256sum | trunc 10 -}}
{{ .name }}-{{ $h | replace "0" "g" | replace "1" "h" | replace "3" "k" | replace "a" "m" | replace "e" "t" }}
{{- end -}}

{{- define "podcert-signer.configName" -}}
{{- include "podcert-signer.generatedName" (dict "name" "podcert-signer-config" "data" (include "podcert-signer.config" . | fromJson)) -}}
{{- end -}}

{{/* The identity policy's ConfigMap (manifests/components/identity-policy). */}}
{{- define "podcert-signer.identityPolicyName" -}}
{{- include "podcert-signer.generatedName" (dict "name" "podcert-signer-identity-policy" "data" (dict "policy.yaml" .Values.identityPolicy.policy)) -}}
{{- end -}}
