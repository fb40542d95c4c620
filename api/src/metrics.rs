//! Prometheus text exposition: queue depth, jobs by status, denoising step latency.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::schema::ModelQueue;
use crate::store::Status;

/// Upper bounds (seconds) of the step-latency histogram buckets.
const STEP_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    /// Cumulative counts per bucket, plus +Inf last.
    step_buckets: [AtomicU64; STEP_BUCKETS.len() + 1],
    step_sum_micros: AtomicU64,
    /// Requests turned away by the queue bound or the rate limit.
    pub rejected_queue_full: AtomicU64,
    pub rejected_rate_limited: AtomicU64,
}

impl Metrics {
    pub fn observe_step(&self, seconds: f64) {
        for (i, le) in STEP_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.step_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.step_buckets[STEP_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.step_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self, queue_depth: usize, jobs: &[(Status, u64)], model_loaded: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP letterpress_queue_depth Jobs waiting for the worker."
        );
        let _ = writeln!(out, "# TYPE letterpress_queue_depth gauge");
        let _ = writeln!(out, "letterpress_queue_depth {queue_depth}");
        let _ = writeln!(out, "# HELP letterpress_jobs Jobs in the store by status.");
        let _ = writeln!(out, "# TYPE letterpress_jobs gauge");
        for (status, n) in jobs {
            let _ = writeln!(
                out,
                "letterpress_jobs{{status=\"{}\"}} {n}",
                status.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP letterpress_step_seconds Duration of one denoising step (all images of a job)."
        );
        let _ = writeln!(out, "# TYPE letterpress_step_seconds histogram");
        for (i, le) in STEP_BUCKETS.iter().enumerate() {
            let n = self.step_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "letterpress_step_seconds_bucket{{le=\"{le}\"}} {n}");
        }
        let count = self.step_buckets[STEP_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "letterpress_step_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.step_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "letterpress_step_seconds_sum {sum}");
        let _ = writeln!(out, "letterpress_step_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP letterpress_rejected_total Requests turned away, by reason."
        );
        let _ = writeln!(out, "# TYPE letterpress_rejected_total counter");
        let q = self.rejected_queue_full.load(Ordering::Relaxed);
        let r = self.rejected_rate_limited.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "letterpress_rejected_total{{reason=\"queue_full\"}} {q}"
        );
        let _ = writeln!(
            out,
            "letterpress_rejected_total{{reason=\"rate_limited\"}} {r}"
        );
        let _ = writeln!(
            out,
            "# HELP letterpress_model_loaded 1 when a diffusion model is loaded."
        );
        let _ = writeln!(out, "# TYPE letterpress_model_loaded gauge");
        let _ = writeln!(out, "letterpress_model_loaded {}", u8::from(model_loaded));
        out
    }
}

/// A scaled-out service's per-model queue gauges.
pub fn render_queues(queues: &[ModelQueue]) -> String {
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&ModelQueue) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for q in queues {
            let model = q.model.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{model=\"{model}\"}} {}", value(q));
        }
    };
    gauge(
        &mut out,
        "letterpress_model_queue_depth",
        "Jobs in the queue per model (waiting or running).",
        &|q| q.jobs,
    );
    gauge(
        &mut out,
        "letterpress_model_workers",
        "Live workers per model.",
        &|q| q.workers as u64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_step(0.02);
        m.observe_step(3.0);
        let text = m.render(2, &[(Status::Queued, 2)], false);
        assert!(
            text.contains("letterpress_step_seconds_bucket{le=\"0.025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("letterpress_step_seconds_bucket{le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("letterpress_step_seconds_count 2\n"));
        assert!(text.contains("letterpress_queue_depth 2\n"));
        assert!(text.contains("letterpress_jobs{status=\"queued\"} 2\n"));
    }
}
