//! The Secrets the operator hands the proxy, one key per object (the kubeconfigs of
//! clusters reached through their API servers, the admin passwords of GuildDatabases):
//! each watched by name, so the proxy's RBAC names that one Secret and it never reads the
//! Secrets they are made from.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

/// The watch events of Secret `name` in `namespace`, retried with backoff.
pub fn watch(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> impl Stream<Item = watcher::Result<Event<Secret>>> + Send + use<> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher::watcher(api, config).default_backoff()
}

/// Applies watch `events` of one handed-over Secret (`what`, for logs) until they end:
/// `replace` gets its whole data after each change (empty once it is deleted); a re-list
/// replaces it only once complete.
pub async fn follow<F: Future<Output = ()>>(
    events: impl Stream<Item = watcher::Result<Event<Secret>>>,
    what: &'static str,
    mut replace: impl FnMut(BTreeMap<String, ByteString>) -> F,
) {
    let mut events = std::pin::pin!(events);
    let mut listed: Option<BTreeMap<String, ByteString>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(secret)) => replace(secret.data.unwrap_or_default()).await,
            Ok(Event::Delete(_)) => replace(BTreeMap::new()).await,
            Ok(Event::Init) => listed = Some(BTreeMap::new()),
            Ok(Event::InitApply(secret)) => listed = secret.data.or_else(|| Some(BTreeMap::new())),
            Ok(Event::InitDone) => replace(listed.take().unwrap_or_default()).await,
            Err(error) => guildnet_runtime::watch::log_error(what, &error),
        }
    }
}
