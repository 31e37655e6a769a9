{{/*
The value of the label app.kubernetes.io/name. Always "clustersync-operator" (the chart's
name, not overridable): the NetworkPolicy the operator gives every engine pod admits only pods
with app.kubernetes.io/name=clustersync-operator in the operator's namespace.
*/}}
{{- define "clustersync-operator.name" -}}
clustersync-operator
{{- end -}}

{{/*
Name of this release's objects: fullnameOverride; else the release name when it already
contains "clustersync-operator"; else "<release>-operator" ("clustersync" gives
"clustersync-operator", the name deploy/base uses).
*/}}
{{- define "clustersync-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "clustersync-operator.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "clustersync-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of every object.
*/}}
{{- define "clustersync-operator.labels" -}}
helm.sh/chart: {{ include "clustersync-operator.chart" . }}
{{ include "clustersync-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clustersync
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Selector labels (Deployment selector, Service, NetworkPolicy). app.kubernetes.io/name must stay
"clustersync-operator" (see "clustersync-operator.name").
*/}}
{{- define "clustersync-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clustersync-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of the operator's pods: podLabels plus the chart's labels, which win on a conflict.
*/}}
{{- define "clustersync-operator.podLabels" -}}
{{- $labels := include "clustersync-operator.selectorLabels" . | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/part-of" "clustersync" -}}
{{- $_ := set $labels "app.kubernetes.io/component" "operator" -}}
{{- toYaml (merge $labels (default (dict) .Values.podLabels)) -}}
{{- end -}}

{{/*
Name of the ServiceAccount the operator runs as.
*/}}
{{- define "clustersync-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "clustersync-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The operator's image: image.repository:image.tag, the tag defaulting to the appVersion.
*/}}
{{- define "clustersync-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The engines' default image (CLUSTERSYNC_ENGINE_IMAGE): engine.image.repository and
engine.image.tag, each defaulting to the operator's.
*/}}
{{- define "clustersync-operator.engineImage" -}}
{{- $repository := default .Values.image.repository .Values.engine.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.engine.image.tag -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/*
Engine pod defaults as the JSON the operator reads (CLUSTERSYNC_ENGINE_DEFAULTS): only the
fields that are set, so that empty values leave the operator's built-in defaults.
*/}}
{{- define "clustersync-operator.engineDefaults" -}}
{{- $d := dict -}}
{{- with .Values.engine.defaults.resources }}{{ $_ := set $d "resources" . }}{{ end -}}
{{- with .Values.engine.defaults.nodeSelector }}{{ $_ := set $d "nodeSelector" . }}{{ end -}}
{{- with .Values.engine.defaults.tolerations }}{{ $_ := set $d "tolerations" . }}{{ end -}}
{{- with .Values.engine.defaults.affinity }}{{ $_ := set $d "affinity" . }}{{ end -}}
{{- with .Values.engine.defaults.priorityClassName }}{{ $_ := set $d "priorityClassName" . }}{{ end -}}
{{- toJson $d -}}
{{- end -}}

{{/*
The namespaces watched with watch.scope namespace, comma-separated: watch.namespaces, or the
release namespace when that list is empty.
*/}}
{{- define "clustersync-operator.watchNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- join "," .Values.watch.namespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/*
Selector labels of the engine pods the operator creates (src/operator/workload.rs, labels()):
every engine of every ClusterSync, whatever its name.
*/}}
{{- define "clustersync-operator.engineSelectorLabels" -}}
app.kubernetes.io/name: clustersync-engine
app.kubernetes.io/managed-by: clustersync-operator
{{- end -}}
