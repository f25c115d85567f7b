//! [`AtomicHistogram`]: the request path's histograms as a Prometheus metric over the
//! lock-free [`crate::counters::Histogram`].
//!
//! prometheus-client's own histogram takes a mutex per observation; every stream of a route
//! shares one histogram, and the inter-token gap is observed once per token, so under load
//! the workers queued on that mutex (docs/performance.md, "Metrics and access lines"). This
//! one is a few relaxed atomic adds per observation, read whole at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::counters::Histogram;

/// A shared handle on one histogram (a family's series): clones observe into the same one.
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<Histogram>);

impl AtomicHistogram {
    /// An empty histogram over `bounds` (ascending seconds).
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram(Arc::new(Histogram::new(bounds)))
    }

    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        encoder.encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;

    const BOUNDS: &[f64] = &[0.01, 0.1, 1.0];

    /// Seeded observations land in the exposition as Prometheus' cumulative buckets, with
    /// the right count and sum, whatever clone of the handle observed them.
    #[test]
    fn observations_are_encoded_as_a_cumulative_histogram() {
        let mut rng = fastrand::Rng::with_seed(7);
        let family = Family::<Vec<(String, String)>, AtomicHistogram>::new_with_constructor(|| {
            AtomicHistogram::new(BOUNDS)
        });
        let mut registry = Registry::default();
        registry.register("t", "test", family.clone());
        let labels = vec![("route".to_owned(), "a".to_owned())];
        let mut want = [0u64; 4];
        let mut sum_ms = 0u64;
        for _ in 0..500 {
            let ms = rng.u64(0..2000);
            let bucket = BOUNDS
                .iter()
                .position(|b| ms as f64 / 1000.0 <= *b)
                .unwrap_or(BOUNDS.len());
            want[bucket] += 1;
            sum_ms += ms;
            family
                .get_or_create(&labels)
                .clone()
                .observe(Duration::from_millis(ms));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let mut cumulative = 0;
        for (i, bound) in ["0.01", "0.1", "1.0", "+Inf"].iter().enumerate() {
            cumulative += want[i];
            let line = format!("t_bucket{{le=\"{bound}\",route=\"a\"}} {cumulative}");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("t_count{route=\"a\"} 500"), "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("t_sum{route=\"a\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - sum_ms as f64 / 1000.0).abs() < 1e-6, "{sum}");
    }
}
