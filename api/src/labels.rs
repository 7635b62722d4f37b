//! Labels and annotations GuildNet puts on, or reads from, objects. They carry over from the
//! earlier host-app version of GuildNet unchanged, so existing selectors keep working.

/// On every object GuildNet manages.
pub const MANAGED: &str = "guildnet.io/managed";
/// The name of the Workspace an object belongs to.
pub const ID: &str = "guildnet.io/id";
/// On everything a GuildDatabase is made of: its name.
pub const DATABASE: &str = "guildnet.io/database";
/// The stable id of the user who owns a Workspace (set by the admission webhook).
pub const OWNER: &str = "guildnet.io/owner";
/// The owner's readable user name (annotation).
pub const OWNER_NAME: &str = "guildnet.io/owner-name";
/// The owner's groups when the workspace was created, comma-separated (annotation, set by
/// the webhook), so the operator can tell which Quotas apply to the owner.
pub const OWNER_GROUPS: &str = "guildnet.io/owner-groups";
/// `true` opts a Workspace out of idle reaping.
pub const KEEPALIVE: &str = "guildnet.io/keepalive";
/// Annotation: `true` makes the proxy forward the whole path, `/w/<namespace>/<name>/…`,
/// for apps serving under that base path themselves (Jupyter's `base_url`); by default the
/// prefix is stripped.
pub const PROXY_KEEP_PREFIX: &str = "guildnet.io/proxy-keep-prefix";
/// Annotation: probe profile override (slow | default | fast).
pub const PROBE_PROFILE: &str = "guildnet.io/probe-profile";
/// Annotation: probe HTTP path override.
pub const PROBE_PATH: &str = "guildnet.io/probe-path";
/// Annotation: take a VolumeSnapshot of a Workspace's persistent volumes under this name.
pub const SNAPSHOT: &str = "guildnet.io/snapshot";
/// Annotation on each child the operator writes: a hash of what it last applied, so a
/// child that already is what the workspace asks for is not written again.
pub const APPLIED: &str = "guildnet.io/applied";
/// On the objects a hub makes in a registered cluster: the hub's id (its `kube-system`
/// namespace's uid unless `--hub-id` says otherwise), so hubs sharing a cluster never touch
/// each other's objects.
pub const ORIGIN: &str = "guildnet.io/origin";
/// On the objects a hub makes in a registered cluster: the namespace of their Workspace
/// in the hub.
pub const HUB_NAMESPACE: &str = "guildnet.io/hub-namespace";
/// On the objects a hub makes in a registered cluster: the name of their Workspace in the
/// hub.
pub const HUB_NAME: &str = "guildnet.io/hub-name";
/// On the objects a hub makes in a registered cluster: the uid of their Workspace in the
/// hub.
pub const HUB_UID: &str = "guildnet.io/hub-uid";
/// Kubernetes' label naming who manages an EndpointSlice, and its value on the slices the
/// operator keeps on the hub for placed workspaces: their endpoints in their cluster, where
/// the proxy finds them as it finds a local workspace's.
pub const ENDPOINT_SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The value of [`ENDPOINT_SLICE_MANAGED_BY`] on those slices.
pub const ENDPOINT_SLICE_MIRRORED_BY: &str = "guildnet-operator";
/// Kubernetes' label naming the Service an EndpointSlice belongs to.
pub const ENDPOINT_SLICE_SERVICE: &str = "kubernetes.io/service-name";
/// Annotation: `true` on a placed Workspace lets it be deleted without deleting its objects
/// in the registered cluster first (a cluster that will not answer again).
pub const ORPHAN_REMOTE: &str = "guildnet.io/orphan-remote";
/// The finalizer on placed Workspaces: their objects in the registered cluster are deleted
/// before they go.
pub const REMOTE_CLEANUP_FINALIZER: &str = "guildnet.io/remote-cleanup";
