//! Wiring: certificates, caches, servers, registration and shutdown.

use crate::access::AccessReviewer;
use crate::caches::Caches;
use crate::cert_source::{Maintainer, SecretStore, Source};
use crate::cli::Args;
use crate::metrics::Metrics;
use crate::reservations::Reservations;
use crate::server::{self, AppState};
use anyhow::Context;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use guildnet_runtime::tls::{self, SwappableCert};
use kube::{Api, Client};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// How long in-flight requests may finish after SIGTERM; the API server gives each at most
/// five seconds anyway.
const GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Runs the webhook until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let registration = args.registration()?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration: set KUBECONFIG or run in a cluster")?;
    let source = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Source::Files {
            cert: cert.clone(),
            key: key.clone(),
            ca: args.ca_file.clone(),
        },
        _ => Source::SelfManaged(Box::new(SecretStore {
            api: Api::namespaced(client.clone(), args.tls_secret_namespace()),
            name: args.tls_secret_name.clone(),
            hosts: args.cert_hosts(registration.as_ref())?,
            lifetimes: args.lifetimes()?,
        })),
    };
    let material = source
        .fetch()
        .await
        .context("cannot obtain the serving certificate")?;
    let resolver = Arc::new(SwappableCert::new(&material.cert, &material.key)?);
    let clients = match &args.client_ca_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --client-ca-file {}", path.display()))?;
            Some(
                tls::client_verifier(&pem)
                    .with_context(|| format!("--client-ca-file {}", path.display()))?,
            )
        }
        None => None,
    };
    let tls_config = RustlsConfig::from_config(Arc::new(tls::server_config_for_clients(
        Arc::clone(&resolver),
        &[b"h2", b"http/1.1"],
        clients,
    )?));

    let (caches, watch_caches) = Caches::start(&client);
    let state = Arc::new(AppState {
        settings: args.settings(),
        caches: caches.clone(),
        reservations: Mutex::new(Reservations::new(args.quota_reservation_ttl)),
        metrics: Metrics::new(),
        access: AccessReviewer::new(client.clone()),
    });
    let (shutdown, shutdown_requested) = watch::channel(false);

    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    // Answers go out at once: under Nagle's algorithm a short answer waits for the ACK of
    // an earlier one still unacknowledged (concurrent admissions share the API server's
    // HTTP/2 connection), and delayed ACKs take tens of milliseconds.
    let acceptor = RustlsAcceptor::new(tls_config).acceptor(NoDelayAcceptor);
    let https = axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle.clone())
        .serve(server::webhook_routes(Arc::clone(&state)).into_make_service());
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_listen))?;
    let mut metrics_stopped = shutdown_requested.clone();
    let metrics = axum::serve(metrics_listener, server::metrics_routes(state))
        .with_graceful_shutdown(async move {
            let _ = metrics_stopped.changed().await;
        });
    let maintainer = Maintainer {
        source,
        resolver,
        registration,
        client,
        caches,
    };

    info!(listen = %args.listen, metrics = %args.metrics_listen, "guildnet-webhook serving");
    let watching = tokio::spawn(watch_caches);
    let maintaining = tokio::spawn(maintainer.run(material, shutdown_requested));
    let serving_metrics = tokio::spawn(async move { metrics.await });
    let mut serving = tokio::spawn(https);
    let outcome = tokio::select! {
        () = guildnet_runtime::shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
        served = &mut serving => served.context("the HTTPS server failed")?.context("the HTTPS server stopped"),
    };
    let _ = shutdown.send(true);
    handle.graceful_shutdown(Some(GRACE_PERIOD));
    let _ = serving.await;
    let _ = serving_metrics.await;
    let _ = maintaining.await;
    watching.abort();
    outcome
}
