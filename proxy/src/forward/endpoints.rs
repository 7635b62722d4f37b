//! Where each workspace answers: the addresses of its Service's EndpointSlices, kept from a
//! watch and indexed by `(namespace, service)`, so a request costs no API call.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use guildnet_api::labels;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

type Key = (String, String);
/// Per service: slice name → its usable backends.
type Index = HashMap<Key, HashMap<String, Vec<Backend>>>;

/// One address of a workspace: an IP and its named ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The endpoint's address, the pod IP.
    pub ip: IpAddr,
    /// (port name, port number) pairs of the slice.
    pub ports: Vec<(Option<String>, u16)>,
    /// Passing its readiness probe. Not-serving endpoints are still tried when nothing
    /// serves: the Service publishes them so a workspace with a wrong probe stays reachable.
    pub serving: bool,
}

/// The backends of every GuildNet Service, by namespace and name; clones share them.
#[derive(Clone, Default)]
pub struct Endpoints {
    index: Arc<RwLock<Index>>,
    next: Arc<AtomicUsize>,
}

impl Endpoints {
    /// An address to send a request for `service` in `namespace` to, on the port named
    /// `port_name` (else the first port). Rotates between the serving backends.
    pub fn pick(
        &self,
        namespace: &str,
        service: &str,
        port_name: Option<&str>,
    ) -> Option<SocketAddr> {
        let index = self.index.read().unwrap();
        let slices = index.get(&(namespace.to_owned(), service.to_owned()))?;
        let backends = || slices.values().flatten();
        let serving = backends().filter(|b| b.serving).count();
        let only_serving = serving > 0;
        let candidates = if only_serving {
            serving
        } else {
            backends().count()
        };
        if candidates == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % candidates;
        let backend = backends()
            .filter(|b| b.serving || !only_serving)
            .nth(turn)?;
        let named = port_name.and_then(|wanted| {
            backend
                .ports
                .iter()
                .find(|(name, _)| name.as_deref() == Some(wanted))
        });
        let port = named.or_else(|| backend.ports.first())?.1;
        Some(SocketAddr::new(backend.ip, port))
    }

    /// The addresses of the serving backends of `service` in `namespace` on the port named
    /// `port_name` (none without one of that name): a database's servers, which the
    /// client tries in turn.
    pub fn serving_on(&self, namespace: &str, service: &str, port_name: &str) -> Vec<SocketAddr> {
        let index = self.index.read().unwrap();
        let Some(slices) = index.get(&(namespace.to_owned(), service.to_owned())) else {
            return Vec::new();
        };
        slices
            .values()
            .flatten()
            .filter(|b| b.serving)
            .filter_map(|b| {
                let (_, port) = b
                    .ports
                    .iter()
                    .find(|(name, _)| name.as_deref() == Some(port_name))?;
                Some(SocketAddr::new(b.ip, *port))
            })
            .collect()
    }

    fn apply(index: &mut Index, slice: &EndpointSlice) {
        let Some(key) = key(slice) else { return };
        let name = slice.metadata.name.clone().unwrap_or_default();
        index.entry(key).or_default().insert(name, backends(slice));
    }

    fn delete(index: &mut Index, slice: &EndpointSlice) {
        let Some(key) = key(slice) else { return };
        if let Some(slices) = index.get_mut(&key) {
            slices.remove(slice.metadata.name.as_deref().unwrap_or_default());
            if slices.is_empty() {
                index.remove(&key);
            }
        }
    }

    /// Keeps the index current from a watch of the EndpointSlices of GuildNet's Services,
    /// until the stream ends.
    pub async fn run(self, client: kube::Client) {
        let api: Api<EndpointSlice> = Api::all(client);
        let config = watcher::Config::default().labels(&format!("{}=true", labels::MANAGED));
        self.follow(watcher::watcher(api, config).default_backoff())
            .await;
    }

    /// Applies watch `events` to the index until they end. A re-list replaces the index
    /// only once it is complete.
    pub async fn follow(self, events: impl Stream<Item = watcher::Result<Event<EndpointSlice>>>) {
        let mut relisting: Option<Index> = None;
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => relisting = Some(Index::new()),
                Ok(Event::InitApply(slice)) => {
                    if let Some(fresh) = relisting.as_mut() {
                        Self::apply(fresh, &slice);
                    }
                }
                Ok(Event::InitDone) => {
                    if let Some(fresh) = relisting.take() {
                        *self.index.write().unwrap() = fresh;
                    }
                }
                Ok(Event::Apply(slice)) => Self::apply(&mut self.index.write().unwrap(), &slice),
                Ok(Event::Delete(slice)) => Self::delete(&mut self.index.write().unwrap(), &slice),
                Err(error) => guildnet_runtime::watch::log_error("EndpointSlices", &error),
            }
        }
    }
}

fn key(slice: &EndpointSlice) -> Option<Key> {
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(labels::ENDPOINT_SLICE_SERVICE)?;
    Some((slice.metadata.namespace.clone()?, service.clone()))
}

/// The endpoints of a slice that may take traffic: not terminating, with an address.
fn backends(slice: &EndpointSlice) -> Vec<Backend> {
    let ports: Vec<(Option<String>, u16)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone(), u16::try_from(p.port?).ok()?)))
        .collect();
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| {
            !e.conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false)
        })
        .filter_map(|e| {
            let ip = e.addresses.first()?.parse().ok()?;
            let conditions = e.conditions.as_ref();
            let serving = conditions
                .and_then(|c| c.serving.or(c.ready))
                .unwrap_or(true);
            Some(Backend {
                ip,
                ports: ports.clone(),
                serving,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use std::collections::BTreeMap;

    fn slice(name: &str, endpoints: &[(&str, bool, bool)]) -> EndpointSlice {
        EndpointSlice {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                labels: Some(BTreeMap::from([(
                    labels::ENDPOINT_SLICE_SERVICE.into(),
                    "ide".into(),
                )])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                endpoints
                    .iter()
                    .map(|(ip, serving, terminating)| Endpoint {
                        addresses: vec![(*ip).into()],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            serving: Some(*serving),
                            terminating: Some(*terminating),
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![
                EndpointPort {
                    name: Some("metrics".into()),
                    port: Some(9090),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    ..Default::default()
                },
            ]),
        }
    }

    fn endpoints(slices: &[EndpointSlice]) -> Endpoints {
        let e = Endpoints::default();
        for s in slices {
            Endpoints::apply(&mut e.index.write().unwrap(), s);
        }
        e
    }

    #[test]
    fn serving_endpoints_are_preferred_and_rotated() {
        let e = endpoints(&[
            slice(
                "ide-a",
                &[("10.244.0.1", true, false), ("10.244.0.2", false, false)],
            ),
            slice(
                "ide-b",
                &[("10.244.0.3", true, false), ("10.244.0.4", true, true)],
            ),
        ]);
        let picked: std::collections::BTreeSet<SocketAddr> = (0..6)
            .map(|_| e.pick("team", "ide", Some("http")).unwrap())
            .collect();
        let want: std::collections::BTreeSet<SocketAddr> = [
            "10.244.0.1:8080".parse().unwrap(),
            "10.244.0.3:8080".parse().unwrap(),
        ]
        .into();
        assert_eq!(picked, want);
        assert_eq!(e.pick("team", "ide", Some("unknown")).unwrap().port(), 9090);
        assert_eq!(e.pick("team", "other", Some("http")), None);
        assert_eq!(e.pick("elsewhere", "ide", Some("http")), None);
    }

    #[test]
    fn not_serving_endpoints_are_used_when_nothing_serves() {
        let e = endpoints(&[slice("ide-a", &[("10.244.0.2", false, false)])]);
        assert_eq!(
            e.pick("team", "ide", Some("http")),
            Some("10.244.0.2:8080".parse().unwrap())
        );
        let terminating = endpoints(&[slice("ide-a", &[("10.244.0.2", true, true)])]);
        assert_eq!(terminating.pick("team", "ide", Some("http")), None);
    }

    #[test]
    fn a_database_is_reached_on_its_named_port_of_serving_servers_only() {
        let e = endpoints(&[slice(
            "ide-a",
            &[("10.244.0.1", true, false), ("10.244.0.2", false, false)],
        )]);
        assert_eq!(
            e.serving_on("team", "ide", "http"),
            ["10.244.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        // No port of that name: not some other port of the Service.
        assert_eq!(e.serving_on("team", "ide", "driver"), []);
        assert_eq!(e.serving_on("team", "other", "http"), []);
    }

    #[test]
    fn deleting_the_last_slice_forgets_the_service() {
        let s = slice("ide-a", &[("10.244.0.1", true, false)]);
        let e = endpoints(std::slice::from_ref(&s));
        Endpoints::delete(&mut e.index.write().unwrap(), &s);
        assert!(e.index.read().unwrap().is_empty());
    }
}
