//! Prometheus metrics of the admission decisions, served on `/metrics`:
//!
//! - `guildnet_webhook_admission_duration_seconds{webhook, operation, result}`: how long a
//!   decision took, from the body read to the answer encoded; `webhook` is `mutating` or
//!   `validating`, `result` is `allowed`, `denied` or `error` (a body that is not an
//!   AdmissionReview).
//! - `guildnet_webhook_denials_total{webhook, reason}`: refusals by their stable reason
//!   (`ImageDenied`, `NotOwner`, … and `Invalid`, `ServiceUnavailable`).
//! - `guildnet_quota_reject_total`: creates and updates refused by a Quota; the number an
//!   operator alerts on when users hit their limits.

use crate::admission::Refusal;
use guildnet_api::policy::DenialReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// Which webhook decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    /// The mutating webhook (`/mutate`): label `webhook="mutating"`.
    Mutating,
    /// The validating webhook (`/validate`): label `webhook="validating"`.
    Validating,
}

impl Webhook {
    fn label(self) -> &'static str {
        match self {
            Self::Mutating => "mutating",
            Self::Validating => "validating",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    webhook: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    webhook: &'static str,
    reason: &'static str,
}

/// The webhook's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    denials: Family<DenialLabels, Counter>,
    quota_rejections: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // 50µs to about 1.6s: decisions take microseconds, the API server gives up at 5s.
        let durations: Family<DurationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.00005, 2.0, 16)));
        registry.register_with_unit(
            "guildnet_webhook_admission_duration",
            "Time to decide an admission request",
            Unit::Seconds,
            durations.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "guildnet_webhook_denials",
            "Admission requests refused, by reason",
            denials.clone(),
        );
        let quota_rejections = Counter::default();
        registry.register(
            "guildnet_quota_reject",
            "Workspace creates and updates refused because a Quota would be exceeded",
            quota_rejections.clone(),
        );
        Self {
            registry,
            durations,
            denials,
            quota_rejections,
        }
    }

    /// Records the outcome of a request of `operation` that took `elapsed`.
    pub fn observe(
        &self,
        webhook: Webhook,
        operation: &'static str,
        outcome: &Result<(), Refusal>,
        elapsed: Duration,
    ) {
        let result = match outcome {
            Ok(()) => "allowed",
            Err(refusal) => {
                let reason = refusal.reason();
                self.denials
                    .get_or_create(&DenialLabels {
                        webhook: webhook.label(),
                        reason,
                    })
                    .inc();
                if reason == DenialReason::QuotaExceeded.as_str() {
                    self.quota_rejections.inc();
                }
                "denied"
            }
        };
        self.record(webhook, operation, result, elapsed);
    }

    /// Records a request whose body was not an AdmissionReview.
    pub fn observe_unreadable(&self, webhook: Webhook, elapsed: Duration) {
        self.record(webhook, "UNKNOWN", "error", elapsed);
    }

    fn record(
        &self,
        webhook: Webhook,
        operation: &'static str,
        result: &'static str,
        elapsed: Duration,
    ) {
        self.durations
            .get_or_create(&DurationLabels {
                webhook: webhook.label(),
                operation,
                result,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
