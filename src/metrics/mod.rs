//! Every Prometheus metric whipgate exposes, in one place, on a registry of its own.
//!
//! Labels stay bounded: backend, route and kind come from routes.toml; endpoint, method,
//! status and reason from small fixed sets. Stream names, session ids and addresses never
//! become labels.

use std::cell::RefCell;
use std::collections::HashMap;

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry, TextEncoder,
};

mod labeled;
pub use labeled::Labeled;

pub type IntCounterVec = Labeled<IntCounter>;
pub type CounterVec = Labeled<Counter>;
pub type IntGaugeVec = Labeled<IntGauge>;
pub type HistogramVec = Labeled<Histogram>;

/// A request method as a label: the methods whipgate serves by name, anything a client
/// invents as `other`, so that no client can add series.
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PUT" => "PUT",
        _ => "other",
    }
}

/// Request latency buckets, in seconds (signalling: sub-millisecond to many seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Session duration buckets, in seconds (a minute to a day).
const SESSION_BUCKETS: &[f64] = &[
    10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// A metric vector whose children each thread keeps at hand. `with_label_values` takes the
/// vector's lock and clones the child's `Arc` on every call: four atomic operations on cache
/// lines every core shares, some thirteen times per WHIP session. [`Family::with`] finds the
/// child in this thread's own map instead. Children are never removed from the vectors, so a
/// kept one is always the registered one.
pub struct Family<V: Children> {
    vec: V,
    kept: thread_local::ThreadLocal<RefCell<Kept<V::Child>>>,
}

/// A metric vector, by the one method [`Family`] needs of it.
pub trait Children {
    type Child: Send;
    fn child(&self, labels: &[&str]) -> Self::Child;
}

impl<M: labeled::Child> Children for Labeled<M> {
    type Child = M;
    fn child(&self, labels: &[&str]) -> M {
        self.with_label_values(labels)
    }
}

struct Kept<M> {
    /// foldhash: SipHash cost more than the lock it replaces; keys come from routes.toml
    /// and fixed sets, not from clients, so there is no flooding to resist.
    children: HashMap<Box<[u8]>, M, foldhash::fast::RandomState>,
    /// The key being looked up: each label's length, then its bytes, built here to
    /// allocate nothing once warm.
    key: Vec<u8>,
}

impl<M> Default for Kept<M> {
    fn default() -> Self {
        Self {
            children: HashMap::default(),
            key: Vec::new(),
        }
    }
}

/// Children one thread keeps per vector; labels are bounded by design (see the module
/// comment), this only caps a mistake.
const KEPT_CHILDREN: usize = 1024;

impl<V: Children> Family<V> {
    fn new(vec: V) -> Self {
        Self {
            vec,
            kept: thread_local::ThreadLocal::new(),
        }
    }

    /// Calls `use_child` with the child of `labels`.
    pub fn with<R>(&self, labels: &[&str], use_child: impl FnOnce(&V::Child) -> R) -> R {
        let mut kept = self.kept.get_or_default().borrow_mut();
        let Kept { children, key } = &mut *kept;
        key.clear();
        for label in labels {
            key.extend_from_slice(&(label.len() as u32).to_le_bytes());
            key.extend_from_slice(label.as_bytes());
        }
        if let Some(child) = children.get(key.as_slice()) {
            return use_child(child);
        }
        let child = self.vec.child(labels);
        if children.len() >= KEPT_CHILDREN {
            children.clear();
        }
        let result = use_child(&child);
        children.insert(key.as_slice().into(), child);
        result
    }
}

impl<V: Children> std::ops::Deref for Family<V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.vec
    }
}

pub type IntCounterFamily = Family<IntCounterVec>;
pub type HistogramFamily = Family<HistogramVec>;
pub type IntGaugeFamily = Family<IntGaugeVec>;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterFamily,
    pub request_duration: HistogramFamily,
    pub upstream_requests: IntCounterFamily,
    pub upstream_duration: HistogramFamily,
    pub failovers: IntCounterVec,
    pub sessions_live: IntGaugeFamily,
    pub sessions_started: IntCounterFamily,
    pub sessions_ended: IntCounterFamily,
    pub session_duration: HistogramFamily,
    pub session_seconds: CounterVec,
    pub cost_estimate: CounterVec,
    pub backend_healthy: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub sdp_rejections: IntCounterVec,
    pub vendor_api_calls: IntCounterVec,
    pub vendor_api_duration: HistogramVec,
    pub relay_legs: IntGaugeVec,
    pub relay_leg_ends: IntCounterVec,
    pub relay_switches: IntCounterVec,
    pub relay_bytes: IntCounterVec,
    pub worker_connections: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
            register(&registry, metric)
        };
        let float_counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = CounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
            register(&registry, metric)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
            register(&registry, metric)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = HistogramVec::new(opts, labels)
                .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
            register(&registry, metric)
        };
        let config_generation = IntGauge::new(
            "whipgate_config_generation",
            "Generation of the route table in force (1 at start, +1 per applied reload).",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let config_generation = register(&registry, config_generation);
        Self {
            requests: Family::new(counter("whipgate_requests_total", "Requests answered, by endpoint, method and status.", &["endpoint", "method", "status"])),
            request_duration: Family::new(histogram("whipgate_request_duration_seconds", "Time to answer a request.", &["endpoint", "method"], LATENCY_BUCKETS)),
            upstream_requests: Family::new(counter("whipgate_upstream_requests_total", "Requests to backends, by backend, method and status (or error).", &["backend", "method", "status"])),
            vendor_api_calls: counter("whipgate_vendor_api_calls_total", "Calls to vendors' own APIs (tokens, ingresses, live inputs, webhooks), by backend, operation and result (ok, 4xx, 429, 5xx, timeout, refused, error, limited).", &["backend", "operation", "result"]),
            vendor_api_duration: histogram("whipgate_vendor_api_duration_seconds", "Time a vendor API call took.", &["backend", "operation"], LATENCY_BUCKETS),
            upstream_duration: Family::new(histogram("whipgate_upstream_duration_seconds", "Time a backend took to answer (redirects included).", &["backend", "method"], LATENCY_BUCKETS)),
            failovers: counter("whipgate_failovers_total", "Sessions moved on from one candidate backend to the next, by reason.", &["from", "to", "reason"]),
            sessions_live: Family::new(gauge("whipgate_sessions_live", "Sessions this replica created that have not ended.", &["backend", "route", "kind"])),
            sessions_started: Family::new(counter("whipgate_sessions_started_total", "Sessions created by this replica.", &["backend", "route", "kind"])),
            sessions_ended: Family::new(counter("whipgate_sessions_ended_total", "Sessions ended (DELETE) through this replica.", &["backend", "route", "kind"])),
            session_duration: Family::new(histogram("whipgate_session_duration_seconds", "Length of sessions created and ended by this replica.", &["backend", "kind"], SESSION_BUCKETS)),
            session_seconds: float_counter("whipgate_session_seconds_total", "Seconds of session time on each backend (live sessions counted as they run).", &["backend"]),
            cost_estimate: float_counter("whipgate_cost_estimate_total", "Estimated cost on each backend: session minutes times cost_per_minute.", &["backend"]),
            backend_healthy: gauge("whipgate_backend_healthy", "1 when new sessions may go to the backend (circuit closed, health check passing), else 0.", &["backend"]),
            config_reloads: counter("whipgate_config_reloads_total", "Reloads of routes.toml, by result (ok or error).", &["result"]),
            config_generation,
            sdp_rejections: counter("whipgate_sdp_rejections_total", "Offers refused, by reason.", &["reason"]),
            relay_legs: gauge("whipgate_relay_legs", "Relay legs of the built-in SFU, by target backend and state (opening, connecting, connected).", &["target", "state"]),
            relay_leg_ends: counter("whipgate_relay_leg_ends_total", "Relay legs ended, by target and reason (silent, ice_dtls, closed, refused, codec, vendor_error, replaced, removed, publisher_left).", &["target", "reason"]),
            relay_switches: counter("whipgate_relay_switches_total", "Failover relays that moved their copy from one target to another.", &["from", "to"]),
            relay_bytes: counter("whipgate_relay_bytes_total", "Media payload bytes sent on relay legs, by target.", &["target"]),
            worker_connections: gauge("whipgate_worker_connections", "Open connections of the main listener, by the worker thread serving them (0 .. workers-1).", &["worker"]),
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding metrics this registry built cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Every metric's name (used or not yet), for `whipgate metrics` and deploy checks.
    pub fn names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 22] = [
            &*self.requests,
            &*self.request_duration,
            &*self.upstream_requests,
            &*self.upstream_duration,
            &self.failovers,
            &*self.sessions_live,
            &*self.sessions_started,
            &*self.sessions_ended,
            &*self.session_duration,
            &self.session_seconds,
            &self.cost_estimate,
            &self.backend_healthy,
            &self.config_reloads,
            &self.config_generation,
            &self.sdp_rejections,
            &self.vendor_api_calls,
            &self.vendor_api_duration,
            &self.relay_legs,
            &self.relay_leg_ends,
            &self.relay_switches,
            &self.relay_bytes,
            &self.worker_connections,
        ];
        let mut names: Vec<String> = collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect();
        names.sort();
        names
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    // Names are unique by construction above.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        for (method, label) in [("POST", "POST"), ("BREW", "other"), ("get", "other")] {
            let method = http::Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(method_label(&method), label);
        }
    }

    #[test]
    fn kept_children_are_the_registered_series_on_every_thread() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..3 {
                        metrics
                            .sessions_ended
                            .with(&["janus", "r1", "whip"], |c| c.inc());
                        metrics
                            .sessions_ended
                            .with(&["janus", "r2", "whip"], |c| c.inc());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let text = metrics.render();
        for route in ["r1", "r2"] {
            let series = format!(
                "whipgate_sessions_ended_total{{backend=\"janus\",kind=\"whip\",route=\"{route}\"}} 6"
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
    }

    #[test]
    fn backends_and_routes_whose_ids_run_together_alike_keep_their_own_series() {
        let metrics = Metrics::new();
        metrics
            .sessions_started
            .with(&["janus", "10", "whip"], |c| c.inc());
        metrics
            .sessions_started
            .with(&["janus1", "0", "whip"], |c| c.inc_by(2));
        let text = metrics.render();
        for (backend, route, count) in [("janus", "10", 1), ("janus1", "0", 2)] {
            let series = format!(
                "whipgate_sessions_started_total{{backend=\"{backend}\",kind=\"whip\",route=\"{route}\"}} {count}"
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
    }

    #[test]
    fn every_metric_is_registered_under_its_name() {
        let metrics = Metrics::new();
        // Vectors appear in the exposition once a label set is used.
        metrics
            .requests
            .with_label_values(&["whip", "POST", "201"])
            .inc();
        metrics.config_generation.set(1);
        let text = metrics.render();
        assert!(text.contains(
            "whipgate_requests_total{endpoint=\"whip\",method=\"POST\",status=\"201\"} 1"
        ));
        assert!(text.contains("whipgate_config_generation 1"));
        assert_eq!(metrics.names().len(), 22);
        assert!(metrics.names().iter().all(|n| n.starts_with("whipgate_")));
    }
}
