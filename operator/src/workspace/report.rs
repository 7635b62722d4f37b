//! Writing a workspace's status, and the Events and metrics of the transitions it records.

use super::controller::{Context, Error};
use super::transitions;
use crate::metrics::Metrics;
use crate::reconcile::apply::apply_status;
use guildnet_api::Workspace;
use guildnet_api::common::find_condition;
use guildnet_api::workspace::WorkspaceStatus;
use guildnet_api::workspace::facts::{ConditionType, Reason};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::time::Duration;

/// Writes `new` as the status when it differs from what the workspace has (server-side
/// apply on the status subresource), and publishes an Event for each phase transition.
/// `lastAccessTime` belongs to the proxy and is never written here.
pub(super) async fn update_status(
    ws: &Workspace,
    namespace: &str,
    mut new: WorkspaceStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let mut current = ws.status.clone().unwrap_or_default();
    current.last_access_time = None;
    new.last_access_time = None;
    if current == new {
        return Ok(());
    }
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), namespace);
    apply_status(&api, &ws.name_any(), &new).await?;
    if current.phase != new.phase && ctx.announce_phase(ws, new.phase) {
        count_transition(ws, &current, &new, &ctx.metrics);
        announce_phase(ws, &new, ctx);
    }
    Ok(())
}

/// Feeds the failure counter and the time-to-first-Ready histogram from a phase change just
/// written.
fn count_transition(
    ws: &Workspace,
    previous: &WorkspaceStatus,
    new: &WorkspaceStatus,
    metrics: &Metrics,
) {
    if let Some(reason) = transitions::entered_failed(previous, new) {
        metrics.workspace_failed(reason);
    }
    if transitions::first_ready(previous, new)
        && let Some(created) = &ws.metadata.creation_timestamp
    {
        let age = Timestamp::now().duration_since(created.0);
        metrics.workspace_ready(Duration::try_from(age).unwrap_or_default());
    }
}

/// The Event of entering a phase, with the `Ready` condition's message as its note.
fn announce_phase(ws: &Workspace, status: &WorkspaceStatus, ctx: &Context) {
    use guildnet_api::workspace::WorkspacePhase::*;
    let note = find_condition(&status.conditions, ConditionType::Ready)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let (type_, reason) = match status.phase {
        Some(Running) => (EventType::Normal, Reason::Ready),
        Some(Failed) => (EventType::Warning, Reason::Failed),
        Some(Stopped) => (EventType::Normal, Reason::Suspended),
        Some(Pending) | None => return,
    };
    ctx.events
        .publish(&ws.object_ref(&()), type_, reason.as_str(), &note);
}
