//! Reading an AdmissionReview of a Workspace or a GuildDatabase, tolerant of objects the
//! Rust types cannot hold.
//!
//! The mutating webhook runs before the API server checks the object against the CRD
//! schema, so it receives whatever a user sent (`hint: turbo`, a missing `image`). Refusing
//! those with a deserialisation error would hide the schema's own message, which names the
//! field and the fix; so an object that does not read as a [`Workspace`] is kept with its
//! metadata only and flagged, and each webhook decides what that means (see
//! [`admission`](crate::admission)).

use guildnet_api::{GuildDatabase, GuildDatabaseSpec, Workspace, WorkspaceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, AdmissionReview, ConvertAdmissionReviewError};
use kube::core::{DynamicObject, Resource};
use serde::de::DeserializeOwned;

/// A kind the webhook admits: read from a review, or kept with its metadata only.
pub trait Admitted: Resource + DeserializeOwned + Clone + Sized {
    /// The object with `metadata` and an empty spec.
    fn metadata_only(metadata: ObjectMeta) -> Self;
}

impl Admitted for Workspace {
    fn metadata_only(metadata: ObjectMeta) -> Self {
        Workspace {
            metadata,
            spec: WorkspaceSpec::default(),
            status: None,
        }
    }
}

impl Admitted for GuildDatabase {
    fn metadata_only(metadata: ObjectMeta) -> Self {
        GuildDatabase {
            metadata,
            spec: GuildDatabaseSpec::default(),
            status: None,
        }
    }
}

/// An AdmissionRequest for a Workspace (or another [`Admitted`] kind), as far as it could be
/// read.
#[derive(Clone, Debug)]
pub struct Review<K: Resource = Workspace> {
    /// The request. An object that could not be read keeps its metadata and has an empty
    /// spec.
    pub request: AdmissionRequest<K>,
    /// Why `request.object` is not a valid object of its kind, when it is not.
    pub unreadable_object: Option<String>,
}

/// Why a request body is not an AdmissionReview at all; answered with HTTP 400, since there
/// is no request uid to answer in a review.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not JSON, or not shaped like an `admission.k8s.io/v1` AdmissionReview.
    #[error("the body is not an AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    /// The AdmissionReview carries no `request` (a response, or an empty review).
    #[error("the AdmissionReview has no request")]
    NoRequest(#[from] ConvertAdmissionReviewError),
}

/// Reads an AdmissionReview body. The typed parse is tried first because it is the common
/// case and the fastest; only when it fails is the body read generically and each object
/// converted on its own, so one unreadable object does not lose the rest of the request.
pub fn decode<K: Admitted>(body: &[u8]) -> Result<Review<K>, Error> {
    if let Ok(review) = serde_json::from_slice::<AdmissionReview<K>>(body) {
        return Ok(Review {
            request: review.try_into()?,
            unreadable_object: None,
        });
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    let request: AdmissionRequest<DynamicObject> = review.try_into()?;
    let (object, unreadable_object) = match request.object.map(read::<K>) {
        Some((workspace, problem)) => (Some(workspace), problem),
        None => (None, None),
    };
    // An unreadable old object (stored before a schema change) still tells its owner.
    let old_object = request.old_object.map(|old| read::<K>(old).0);
    Ok(Review {
        request: AdmissionRequest {
            types: request.types,
            uid: request.uid,
            kind: request.kind,
            resource: request.resource,
            sub_resource: request.sub_resource,
            request_kind: request.request_kind,
            request_resource: request.request_resource,
            request_sub_resource: request.request_sub_resource,
            name: request.name,
            namespace: request.namespace,
            operation: request.operation,
            user_info: request.user_info,
            object,
            old_object,
            dry_run: request.dry_run,
            options: request.options,
        },
        unreadable_object,
    })
}

/// The object as a `K`; or its metadata with an empty spec, and what is wrong.
fn read<K: Admitted>(object: DynamicObject) -> (K, Option<String>) {
    match serde_json::to_value(&object).and_then(serde_json::from_value::<K>) {
        Ok(read) => (read, None),
        Err(error) => (K::metadata_only(object.metadata), Some(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::Operation;
    use serde_json::json;

    fn body(object: serde_json::Value, old: serde_json::Value, operation: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "guildnet.io", "version": "v1alpha1", "kind": "Workspace"},
                "resource": {"group": "guildnet.io", "version": "v1alpha1", "resource": "workspaces"},
                "name": "ide",
                "namespace": "default",
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": object,
                "oldObject": old,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn workspace(spec: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "guildnet.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "ide", "namespace": "default", "labels": {"guildnet.io/owner": "u-x"}},
            "spec": spec
        })
    }

    #[test]
    fn reads_a_valid_review_typed() {
        let review: Review = decode(&body(
            workspace(json!({"image": "nginx"})),
            json!(null),
            "CREATE",
        ))
        .unwrap();
        assert_eq!(review.unreadable_object, None);
        assert_eq!(review.request.operation, Operation::Create);
        assert_eq!(review.request.object.unwrap().spec.image, "nginx");
        assert_eq!(review.request.types.api_version, "admission.k8s.io/v1");
    }

    #[test]
    fn keeps_the_metadata_of_an_object_the_types_cannot_hold() {
        let review: Review = decode(&body(
            workspace(json!({"image": "nginx", "hint": "turbo"})),
            workspace(json!({})),
            "UPDATE",
        ))
        .unwrap();
        let problem = review.unreadable_object.unwrap();
        assert!(problem.contains("turbo"), "{problem}");
        let object = review.request.object.unwrap();
        assert_eq!(object.metadata.name.as_deref(), Some("ide"));
        assert_eq!(object.spec, WorkspaceSpec::default());
        let old = review.request.old_object.unwrap();
        assert_eq!(old.metadata.labels.unwrap()["guildnet.io/owner"], "u-x");
    }

    #[test]
    fn refuses_what_is_not_a_review() {
        assert!(matches!(decode::<Workspace>(b"{"), Err(Error::Json(_))));
        let no_request = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#;
        assert!(matches!(
            decode::<Workspace>(no_request),
            Err(Error::NoRequest(_))
        ));
    }
}
