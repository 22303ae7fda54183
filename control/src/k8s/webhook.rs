//! The injection webhook's request handling, free of I/O: turns a Pod `AdmissionReview` into the
//! response carrying the injection patch, reading namespace labels from the Kubernetes source's
//! store. The HTTPS server that carries reviews is separate.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Value, json};

use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::inject::{Decision, InjectSettings, inject};
use super::kinds::{KubeObject, ResourceKind};
use super::store::Store;

/// Audit annotation recording the decision on every reviewed pod.
pub const AUDIT_DECISION: &str = "jalin-injection";

/// The labels of namespace `name` in `store` (empty when unknown).
pub fn namespace_labels(store: &Store, name: &str) -> BTreeMap<String, String> {
    match store
        .get_named(ResourceKind::Namespace, "", name)
        .map(|o| &**o)
    {
        Some(KubeObject::Namespace(ns)) => ns.metadata.labels.clone().unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

/// Answers one pod admission request: the injection patch, no change, or a denial that says
/// which annotation to fix.
pub fn respond(
    request: &AdmissionRequest<Pod>,
    namespace_labels: &BTreeMap<String, String>,
    settings: &InjectSettings,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(pod) = request.object.as_ref() else {
        return response;
    };
    if request.operation != Operation::Create {
        return response;
    }
    // On CREATE the pod's namespace may only be in the request.
    let mut pod = pod.clone();
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace.clone_from(&request.namespace);
    }
    match inject(&pod, namespace_labels, settings) {
        Ok(injection) => {
            let mut response = response;
            let decision = match &injection.decision {
                Decision::Inject => "injected".to_string(),
                Decision::Skip(reason) => format!("skipped: {reason:?}"),
            };
            response
                .audit_annotations
                .insert(AUDIT_DECISION.to_string(), decision);
            if !injection.warnings.is_empty() {
                response.warnings = Some(injection.warnings);
            }
            if injection.patch.0.is_empty() {
                return response;
            }
            match response.clone().with_patch(injection.patch) {
                Ok(patched) => patched,
                Err(error) => response.deny(format!(
                    "jalin sidecar injection could not encode its patch: {error}"
                )),
            }
        }
        Err(error) => response.deny(error.to_string()),
    }
}

/// Answers a whole review, looking the pod's namespace up in `store`; returns the JSON body to
/// send back.
pub fn review(review: AdmissionReview<Pod>, store: &Store, settings: &InjectSettings) -> Value {
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(error) => return encode(&AdmissionResponse::invalid(error.to_string()).into_review()),
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| {
            request
                .object
                .as_ref()
                .and_then(|p| p.metadata.namespace.clone())
        })
        .unwrap_or_default();
    encode(&respond(&request, &namespace_labels(store, &namespace), settings).into_review())
}

/// The review as the API server reads it: `response.patch` base64-encoded, as its `[]byte` field
/// requires (kube serialises the bytes as a JSON array of numbers).
pub fn encode(review: &AdmissionReview<DynamicObject>) -> Value {
    let patch = review.response.as_ref().and_then(|r| r.patch.clone());
    let mut value = serde_json::to_value(review).unwrap_or_else(|error| {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"allowed": false, "status": {
                "message": format!("jalin webhook cannot encode its response: {error}")}},
        })
    });
    if let (Some(patch), Some(response)) = (patch, value.get_mut("response")) {
        response["patch"] = Value::String(BASE64_STANDARD.encode(patch));
    }
    value
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn pod_review(annotations: &Value) -> AdmissionReview<Pod> {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "child-services",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "case-api-", "labels": {"app": "case-api"},
                                 "annotations": annotations},
                    "spec": {"containers": [{"name": "app", "image": "app"}]}
                },
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn store(label: &str) -> Store {
        let mut store = Store::new();
        let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
            "metadata": {"name": "child-services", "labels": {"istio-injection": label}}
        }))
        .unwrap();
        store.insert(Arc::new(KubeObject::Namespace(Box::new(ns))));
        store
    }

    fn response(review: &Value) -> Value {
        review["response"].clone()
    }

    #[test]
    fn labelled_namespace_gets_a_json_patch() {
        let out = review(
            pod_review(&json!({})),
            &store("enabled"),
            &InjectSettings::default(),
        );
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        let r = response(&out);
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        assert_eq!(r["auditAnnotations"][AUDIT_DECISION], "injected");
        let bytes = BASE64_STANDARD
            .decode(r["patch"].as_str().unwrap())
            .unwrap();
        let decoded = String::from_utf8(bytes).unwrap();
        let ops: Vec<Value> = serde_json::from_str(&decoded).unwrap();
        assert!(ops.iter().all(|op| op["op"] == "add"));
        assert!(decoded.contains("/spec/initContainers"), "{decoded}");
        assert!(decoded.contains("jalin-proxy"));
    }

    #[test]
    fn disabled_namespace_is_allowed_unchanged() {
        let out = review(
            pod_review(&json!({})),
            &store("disabled"),
            &InjectSettings::default(),
        );
        let r = response(&out);
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none());
        assert!(
            r["auditAnnotations"][AUDIT_DECISION]
                .as_str()
                .unwrap()
                .starts_with("skipped")
        );
    }

    #[test]
    fn a_bad_annotation_denies_with_the_reason() {
        let annotations = json!({"traffic.sidecar.istio.io/excludeOutboundPorts": "http"});
        let out = review(
            pod_review(&annotations),
            &store("enabled"),
            &InjectSettings::default(),
        );
        let r = response(&out);
        assert_eq!(r["allowed"], false);
        let message = r["status"]["message"].as_str().unwrap();
        assert!(message.contains("child-services/case-api-"), "{message}");
        assert!(message.contains("excludeOutboundPorts"), "{message}");
    }
}
