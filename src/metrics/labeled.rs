//! Metric vectors keyed by their label values themselves.
//!
//! prometheus 0.14's vectors key each child by one FNV hash of the label values run
//! together, with no separator, and never compare the values: `{backend="ab",route="c"}`
//! and `{backend="a",route="bc"}` were one series, so sessions of backend `janus` on route
//! `10` and of `janus1` on route `0` were counted together. [`Labeled`] keeps each child
//! under its values (length-prefixed, so no two sets share a key) and exposes them as
//! prometheus's vectors do: one family, one metric per label set.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus::core::{Collector, Desc, Metric};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Counter, Histogram, HistogramOpts, IntCounter, IntGauge, Opts};

/// A metric that can be one child of a [`Labeled`] vector.
pub trait Child: Metric + Clone + Send + Sync + 'static {
    /// What the vector was declared with: name, help and (for histograms) buckets.
    type Opts: Clone + Send + Sync + 'static;
    const TYPE: MetricType;
    fn describe(opts: &Self::Opts, labels: &[&str]) -> prometheus::Result<Desc>;
    /// A child whose label values are fixed as constant labels.
    fn build(opts: &Self::Opts, labels: HashMap<String, String>) -> prometheus::Result<Self>;
}

macro_rules! plain_child {
    ($metric:ty, $type:expr) => {
        impl Child for $metric {
            type Opts = Opts;
            const TYPE: MetricType = $type;
            fn describe(opts: &Opts, labels: &[&str]) -> prometheus::Result<Desc> {
                Desc::new(
                    opts.fq_name(),
                    opts.help.clone(),
                    labels.iter().map(|l| (*l).to_owned()).collect(),
                    opts.const_labels.clone(),
                )
            }
            fn build(opts: &Opts, labels: HashMap<String, String>) -> prometheus::Result<Self> {
                let mut opts = opts.clone();
                opts.const_labels.extend(labels);
                <$metric>::with_opts(opts)
            }
        }
    };
}
plain_child!(IntCounter, MetricType::COUNTER);
plain_child!(Counter, MetricType::COUNTER);
plain_child!(IntGauge, MetricType::GAUGE);

impl Child for Histogram {
    type Opts = HistogramOpts;
    const TYPE: MetricType = MetricType::HISTOGRAM;
    fn describe(opts: &HistogramOpts, labels: &[&str]) -> prometheus::Result<Desc> {
        <IntCounter as Child>::describe(&opts.common_opts, labels)
    }
    fn build(opts: &HistogramOpts, labels: HashMap<String, String>) -> prometheus::Result<Self> {
        let mut opts = opts.clone();
        opts.common_opts.const_labels.extend(labels);
        Histogram::with_opts(opts)
    }
}

/// Children by [`key_of`] their label values. foldhash: keys come from routes.toml and
/// fixed sets, not from clients, so there is no flooding to resist.
type ChildMap<M> = HashMap<Box<[u8]>, M, foldhash::fast::RandomState>;

/// A vector of `M`s, one per set of label values. Clones share their children (the
/// registry holds one clone, the code another).
#[derive(Clone)]
pub struct Labeled<M: Child> {
    desc: Arc<Desc>,
    opts: Arc<M::Opts>,
    labels: Arc<[String]>,
    children: Arc<RwLock<ChildMap<M>>>,
}

impl<M: Child> Labeled<M> {
    pub fn new(opts: M::Opts, labels: &[&str]) -> prometheus::Result<Self> {
        let desc = M::describe(&opts, labels)?;
        Ok(Self {
            desc: Arc::new(desc),
            opts: Arc::new(opts),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            children: Arc::default(),
        })
    }

    /// The child of these label values, made on first use. A count of values other than
    /// the vector's labels is a bug in whipgate's own code, which names them statically;
    /// it panics as prometheus's own vectors do.
    pub fn with_label_values(&self, values: &[&str]) -> M {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "metric {}: {} label values for labels {:?}",
            self.desc.fq_name,
            values.len(),
            self.labels
        );
        let key = key_of(values);
        if let Some(child) = self
            .children
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return child.clone();
        }
        let mut children = self
            .children
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        children
            .entry(key)
            .or_insert_with(|| {
                let labels = self
                    .labels
                    .iter()
                    .cloned()
                    .zip(values.iter().map(|v| (*v).to_owned()))
                    .collect();
                // The names were checked when the vector was made; values are any text.
                M::build(&self.opts, labels).unwrap_or_else(|e| {
                    unreachable!("metric {} with checked labels: {e}", self.desc.fq_name)
                })
            })
            .clone()
    }
}

/// Each value's length, then its bytes: distinct value lists give distinct keys.
fn key_of(values: &[&str]) -> Box<[u8]> {
    let mut key = Vec::with_capacity(values.iter().map(|v| v.len() + 4).sum());
    for value in values {
        key.extend_from_slice(&(value.len() as u32).to_le_bytes());
        key.extend_from_slice(value.as_bytes());
    }
    key.into_boxed_slice()
}

impl<M: Child> Collector for Labeled<M> {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let children = self.children.read().unwrap_or_else(PoisonError::into_inner);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(M::TYPE);
        family.set_metric(children.values().map(Metric::metric).collect());
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(collector: &dyn Collector) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&collector.collect(), &mut out)
            .expect("encodes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn label_sets_that_run_together_alike_are_two_series() {
        let vec: Labeled<IntCounter> =
            Labeled::new(Opts::new("t_total", "t"), &["backend", "route"]).expect("vec");
        vec.with_label_values(&["janus", "10"]).inc();
        vec.with_label_values(&["janus1", "0"]).inc_by(2);
        vec.with_label_values(&["janus", "10"]).inc();
        let text = exposition(&vec);
        assert!(
            text.contains("t_total{backend=\"janus\",route=\"10\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("t_total{backend=\"janus1\",route=\"0\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn exposes_what_prometheus_vectors_expose() {
        let ours: Labeled<Histogram> = Labeled::new(
            HistogramOpts::new("h_seconds", "h").buckets(vec![0.1, 1.0]),
            &["b", "a"],
        )
        .expect("vec");
        let theirs = prometheus::HistogramVec::new(
            HistogramOpts::new("h_seconds", "h").buckets(vec![0.1, 1.0]),
            &["b", "a"],
        )
        .expect("vec");
        for (labels, value) in [(["x", "y"], 0.05), (["x", "z"], 0.5), (["x", "y"], 3.0)] {
            ours.with_label_values(&labels).observe(value);
            theirs.with_label_values(&labels).observe(value);
        }
        let sorted = |text: String| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(exposition(&ours)), sorted(exposition(&theirs)));
        let gauge: Labeled<IntGauge> = Labeled::new(Opts::new("g", "g"), &["w"]).expect("vec");
        gauge.with_label_values(&["0"]).set(3);
        assert_eq!(
            exposition(&gauge),
            "# HELP g g\n# TYPE g gauge\ng{w=\"0\"} 3\n"
        );
    }
}
