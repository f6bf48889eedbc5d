//! Prometheus metrics (prometheus-client): executions by outcome and decision, their duration,
//! authentication failures, rate-limited requests, sandboxes, commands in flight.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecLabels {
    pub outcome: String,
    pub decision: String,
}

pub struct Metrics {
    registry: Registry,
    pub execs: Family<ExecLabels, Counter>,
    pub exec_seconds: Histogram,
    pub auth_failures: Counter,
    pub rate_limited: Counter,
    pub audit_failures: Counter,
    pub sandboxes: Gauge,
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stockade");
        let execs = Family::<ExecLabels, Counter>::default();
        let exec_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let auth_failures = Counter::default();
        let rate_limited = Counter::default();
        let audit_failures = Counter::default();
        let sandboxes = Gauge::default();
        let in_flight = Gauge::default();
        registry.register(
            "execs",
            "Executions by outcome and check decision",
            execs.clone(),
        );
        registry.register(
            "exec_duration_seconds",
            "Wall time of executions",
            exec_seconds.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications",
            auth_failures.clone(),
        );
        registry.register(
            "rate_limited_requests",
            "Requests refused because their client was locked out",
            rate_limited.clone(),
        );
        registry.register(
            "audit_failures",
            "Executions that ran although their audit records could not be written \
             (on_audit_failure = \"run\"); held and written after a gap record",
            audit_failures.clone(),
        );
        registry.register(
            "sandboxes_active",
            "Sandboxes of the API",
            sandboxes.clone(),
        );
        registry.register(
            "commands_in_flight",
            "Executions running now",
            in_flight.clone(),
        );
        Metrics {
            registry,
            execs,
            exec_seconds,
            auth_failures,
            rate_limited,
            audit_failures,
            sandboxes,
            in_flight,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
