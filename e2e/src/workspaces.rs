//! Workspaces in tests: a manifest from a spec, and waiting until one reaches a state.

use std::time::Duration;

use guildnet_api::Workspace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::object::HasStatus;
use kube::runtime::wait::await_condition;
use kube::runtime::wait::conditions::is_deleted;
use serde_json::{Value, json};

/// How long a workspace may take to reach a state the tests wait for.
pub const WAIT: Duration = Duration::from_secs(60);

/// A Workspace named `name` with `spec`, as `kubectl apply` would send it.
pub fn manifest(name: &str, spec: Value) -> Workspace {
    serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a Workspace manifest")
}

/// Creates the Workspace `name` with `spec` through `api`, failing the test if refused.
pub async fn create(api: &Api<Workspace>, name: &str, spec: Value) -> Workspace {
    api.create(&PostParams::default(), &manifest(name, spec))
        .await
        .unwrap_or_else(|e| panic!("create workspace {name}: {e}"))
}

/// Waits (watching, up to [`WAIT`]) until the object (a Workspace, a GuildDatabase…)
/// satisfies `check`; fails naming `what` and the status it has.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource
        + HasStatus
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::Status: std::fmt::Debug,
{
    let cond = await_condition(api.clone(), name, move |object: Option<&K>| {
        object.is_some_and(&check)
    });
    match tokio::time::timeout(WAIT, cond).await {
        Ok(Ok(Some(object))) => object,
        _ => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!(
                "{name}: timed out waiting for {what}; now: {:?}",
                now.as_ref().and_then(HasStatus::status)
            )
        }
    }
}

/// Waits (up to [`WAIT`]) until the object `name` is deleted; returns at once when there is
/// none.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let uid = match api.get_opt(name).await.expect("read the object") {
        Some(obj) => obj.meta().uid.clone().unwrap_or_default(),
        None => return,
    };
    tokio::time::timeout(WAIT, await_condition(api.clone(), name, is_deleted(&uid)))
        .await
        .unwrap_or_else(|_| panic!("{name} was not deleted"))
        .expect("watch the object");
}

/// Sets `spec.lifecycle.suspend`, as a user would with `kubectl patch`.
pub async fn set_suspended(api: &Api<Workspace>, name: &str, suspend: bool) -> Workspace {
    let patch = json!({"spec": {"lifecycle": {"suspend": suspend}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch spec.lifecycle.suspend")
}
