//! The NetworkPolicy that isolates a workspace's pod: without it, any pod in the cluster —
//! another user's workspace included — could open the workspace directly, past the proxy's
//! authentication, with nothing but a leaked or guessed password in the way. Enforced only
//! where the cluster's network plugin enforces NetworkPolicies (Calico, Cilium, …).

use super::meta::Parent;
use guildnet_api::workspace::{ExposureType, WorkspaceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Where the GuildNet proxy runs: the only peer a workspace accepts connections from unless
/// its spec exposes it further.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyPeer {
    /// The proxy's namespace.
    pub namespace: String,
    /// Labels that select the proxy's pods in it.
    pub pod_labels: BTreeMap<String, String>,
}

impl Default for ProxyPeer {
    fn default() -> Self {
        Self {
            namespace: "guildnet-system".to_owned(),
            pod_labels: BTreeMap::from([(
                "app.kubernetes.io/component".to_owned(),
                "proxy".to_owned(),
            )]),
        }
    }
}

/// The label every namespace carries with its own name (Kubernetes sets it).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The NetworkPolicy `<workspace>`: the pod accepts connections on its ports from the proxy
/// only; with `LoadBalancer` or `Ingress` exposure, which the user was granted, from any
/// source on those ports (a load balancer's or ingress controller's address is not
/// something a portable selector can name). Egress is left open: a workspace needs its
/// package registries and the internet.
pub(super) fn network_policy(
    parent: &Parent,
    spec: &WorkspaceSpec,
    proxy: &ProxyPeer,
) -> NetworkPolicy {
    let ports = spec
        .ports
        .iter()
        .map(|port| NetworkPolicyPort {
            port: Some(IntOrString::Int(port.container_port)),
            protocol: Some("TCP".to_owned()),
            end_port: None,
        })
        .collect();
    let exposed = matches!(
        spec.exposure.as_ref().map(|e| e.type_),
        Some(ExposureType::LoadBalancer | ExposureType::Ingress)
    );
    let from = (!exposed).then(|| {
        vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_owned(),
                    proxy.namespace.clone(),
                )])),
                match_expressions: None,
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(proxy.pod_labels.clone()),
                match_expressions: None,
            }),
            ip_block: None,
        }]
    });
    NetworkPolicy {
        metadata: parent.owned_meta(parent.name.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(parent.selector()),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from,
                ports: Some(ports),
            }]),
            egress: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::test_support::workspace;
    use crate::workspace::{BuildContext, desired_children};
    use guildnet_api::labels;
    use guildnet_api::workspace::Exposure;

    #[test]
    fn only_the_proxy_may_connect_to_a_cluster_ip_workspace() {
        let children = desired_children(&workspace("nginx"), &BuildContext::default()).unwrap();
        let policy = children.network_policy;
        assert_eq!(policy.metadata.name.as_deref(), Some("ide"));
        assert_eq!(policy.metadata.owner_references.unwrap()[0].uid, "uid-1");
        let spec = policy.spec.unwrap();
        let selected = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selected[labels::ID], "ide");
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1, "one rule: nothing else is admitted");
        let from = rules[0].from.as_ref().expect("sources are restricted");
        assert_eq!(from.len(), 1);
        let namespaces = from[0].namespace_selector.as_ref().unwrap();
        assert_eq!(
            namespaces.match_labels.as_ref().unwrap()[NAMESPACE_NAME_LABEL],
            "guildnet-system"
        );
        let pods = from[0].pod_selector.as_ref().unwrap();
        assert_eq!(
            pods.match_labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "proxy"
        );
        let ports: Vec<_> = rules[0]
            .ports
            .iter()
            .flatten()
            .map(|p| p.port.clone())
            .collect();
        assert_eq!(ports, [Some(IntOrString::Int(8080))], "the defaulted port");
    }

    #[test]
    fn exposure_the_user_was_granted_opens_the_ports_to_any_source() {
        for type_ in [ExposureType::LoadBalancer, ExposureType::Ingress] {
            let mut ws = workspace("nginx");
            ws.spec.exposure = Some(Exposure {
                type_,
                ingress: None,
            });
            let parent = Parent::new(&ws).unwrap();
            let policy = network_policy(&parent, &ws.spec, &ProxyPeer::default());
            let rules = policy.spec.unwrap().ingress.unwrap();
            assert_eq!(rules[0].from, None, "{type_:?}");
        }
    }
}
