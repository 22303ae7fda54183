{{/* Object names are fixed (not release-prefixed): sidecars and the webhook address `jalin.<namespace>.svc`. */}}

{{- define "jalin.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "jalin.controlImage" -}}
{{- printf "%s/%s:%s" .Values.image.hub .Values.image.control (include "jalin.tag" .) -}}
{{- end -}}

{{- define "jalin.proxyImage" -}}
{{- printf "%s/%s:%s" .Values.image.hub .Values.image.proxy (include "jalin.tag" .) -}}
{{- end -}}

{{- define "jalin.labels" -}}
app.kubernetes.io/name: jalin
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: jalin
app.kubernetes.io/version: {{ include "jalin.tag" . | quote }}
{{- end -}}

{{- define "jalin.selectorLabels" -}}
app.kubernetes.io/name: jalin
app.kubernetes.io/component: control-plane
{{- end -}}

{{/* The parts both injection webhooks share; called with (dict "root" $ "caBundle" $caBundle). */}}
{{- define "jalin.webhookCommon" }}
    clientConfig:
      service:
        name: jalin
        namespace: {{ .root.Release.Namespace }}
        path: /inject
        port: 443
      {{- with .caBundle }}
      caBundle: {{ . }}
      {{- end }}
    rules:
      - operations: ["CREATE"]
        apiGroups: [""]
        apiVersions: ["v1"]
        resources: ["pods"]
        scope: Namespaced
    objectSelector:
      matchExpressions:
        - key: sidecar.istio.io/inject
          operator: NotIn
          values: ["false"]
        - key: sidecar.jalin.io/inject
          operator: NotIn
          values: ["false"]
    failurePolicy: Fail
    sideEffects: None
    matchPolicy: Equivalent
    reinvocationPolicy: Never
    admissionReviewVersions: ["v1"]
    timeoutSeconds: {{ .root.Values.webhook.timeoutSeconds }}
{{- end }}
