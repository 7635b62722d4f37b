//! Who owns an object the webhook labels (a Workspace, a GuildDatabase): the facts every
//! owned kind shares, read from its metadata. Each kind's `owner_*` methods call these.

use crate::labels;
use crate::policy::User;
use crate::workspace::facts::decode_owner_groups;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The groups recorded for an owner whose object predates the `owner-groups` annotation:
/// every authenticated user has this one.
const AUTHENTICATED: &str = "system:authenticated";

/// The stable id of the owner (`guildnet.io/owner`, set by the webhook).
pub fn owner_id(meta: &ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(labels::OWNER).map(String::as_str)
}

/// The owner's readable user name (`guildnet.io/owner-name`).
pub fn owner_name(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(labels::OWNER_NAME)
        .map(String::as_str)
}

/// The owner's groups as the webhook saw them (`guildnet.io/owner-groups`);
/// `system:authenticated` alone when the annotation is missing.
pub fn owner_groups(meta: &ObjectMeta) -> Vec<String> {
    match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::OWNER_GROUPS))
    {
        Some(value) => decode_owner_groups(value),
        None => vec![AUTHENTICATED.to_owned()],
    }
}

/// The owner as Capabilities and Quotas match them: the recorded name and groups; `None`
/// without an owner name.
pub fn owner(meta: &ObjectMeta) -> Option<User> {
    Some(User::new(owner_name(meta)?, owner_groups(meta)))
}
