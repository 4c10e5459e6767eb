//! Prometheus metrics through one registry: counters fed from the scheduler's outcomes and the
//! cache's counters, gauges read from the scheduler when `/metrics` is scraped.

mod grpc;

pub use grpc::GrpcMetricsLayer;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use drover_scheduler::state::{Action, Gauges, MessageKind, RunEvent, TaskStatus};

use crate::cache::Counters as CacheCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabel {
    message: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TemplateLabel {
    launch_template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodCodeLabel {
    method: String,
    code: &'static str,
}

fn seconds_histogram() -> Histogram {
    // 10 ms to about 5.8 hours.
    Histogram::new(exponential_buckets(0.01, 2.0, 22))
}

fn fast_histogram() -> Histogram {
    // 0.1 ms to about 3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every metric the coordinator exports.
pub struct Metrics {
    registry: Registry,
    leases_granted: Counter,
    leases_reclaimed: Counter,
    results_refused: Counter,
    messages_refused: Family<MessageLabel, Counter>,
    tasks_finished: Family<StatusLabel, Counter>,
    runs_ended: Family<StatusLabel, Counter>,
    runs_forgotten: Counter,
    agents_connected: Gauge,
    agent_slots: Gauge,
    tasks_running: Gauge,
    tasks_queued: Gauge,
    runs_active: Gauge,
    store_writable: Gauge,
    template_agents: Family<TemplateLabel, Gauge>,
    template_free_slots: Family<TemplateLabel, Gauge>,
    template_ready: Family<TemplateLabel, Gauge>,
    template_running: Family<TemplateLabel, Gauge>,
    task_duration: Family<TargetLabel, Histogram, fn() -> Histogram>,
    store_commit: Histogram,
    grpc_requests: Family<MethodCodeLabel, Counter>,
    grpc_latency: Family<MethodLabel, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// The registry, with the cache's counters when a cache is served.
    pub fn new(cache: Option<&CacheCounters>) -> Metrics {
        let mut registry = Registry::with_prefix("drover");
        let mut m = Metrics {
            leases_granted: Counter::default(),
            leases_reclaimed: Counter::default(),
            results_refused: Counter::default(),
            messages_refused: Family::default(),
            tasks_finished: Family::default(),
            runs_ended: Family::default(),
            runs_forgotten: Counter::default(),
            agents_connected: Gauge::default(),
            agent_slots: Gauge::default(),
            tasks_running: Gauge::default(),
            tasks_queued: Gauge::default(),
            runs_active: Gauge::default(),
            store_writable: Gauge::default(),
            template_agents: Family::default(),
            template_free_slots: Family::default(),
            template_ready: Family::default(),
            template_running: Family::default(),
            task_duration: Family::new_with_constructor(seconds_histogram),
            store_commit: fast_histogram(),
            grpc_requests: Family::default(),
            grpc_latency: Family::new_with_constructor(fast_histogram),
            registry: Registry::default(),
        };
        let r = &mut registry;
        // (The registry is filled below, then put in place of the empty one.)
        r.register(
            "agents_connected",
            "Agents with an open stream",
            m.agents_connected.clone(),
        );
        r.register(
            "agent_slots",
            "Slots of connected agents",
            m.agent_slots.clone(),
        );
        r.register(
            "tasks_running",
            "Tasks running on agents",
            m.tasks_running.clone(),
        );
        r.register(
            "tasks_queued",
            "Tasks waiting for dependencies or a slot",
            m.tasks_queued.clone(),
        );
        r.register(
            "runs_active",
            "Runs that have not ended",
            m.runs_active.clone(),
        );
        r.register(
            "store_writable",
            "1 while the store takes writes; 0 after a failed commit (nothing new is acknowledged)",
            m.store_writable.clone(),
        );
        r.register(
            "template_agents",
            "Connected agents per launch template",
            m.template_agents.clone(),
        );
        r.register(
            "template_free_slots",
            "Free slots of connected agents that take work, per launch template",
            m.template_free_slots.clone(),
        );
        r.register(
            "tasks_ready",
            "Ready tasks each launch template may run (what an autoscaler scales a pool on)",
            m.template_ready.clone(),
        );
        r.register(
            "template_running",
            "Tasks running on agents, per launch template",
            m.template_running.clone(),
        );
        r.register(
            "task_duration_seconds",
            "How long task attempts ran, by target (succeeded and failed attempts)",
            m.task_duration.clone(),
        );
        r.register(
            "store_commit_seconds",
            "How long one store commit (a transaction and its disk flush) took",
            m.store_commit.clone(),
        );
        r.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            m.grpc_requests.clone(),
        );
        r.register(
            "grpc_request_duration_seconds",
            "Time to a gRPC response's start, by method",
            m.grpc_latency.clone(),
        );
        r.register(
            "leases_granted",
            "Leases handed to agents",
            m.leases_granted.clone(),
        );
        r.register(
            "leases_reclaimed",
            "Leases taken back from agents (lost, drained, restarted) and queued again",
            m.leases_reclaimed.clone(),
        );
        r.register(
            "results_refused",
            "Results refused because their lease was revoked or unknown",
            m.results_refused.clone(),
        );
        r.register(
            "messages_refused",
            "Agent messages refused because their lease was not the agent's active lease",
            m.messages_refused.clone(),
        );
        r.register(
            "tasks_finished",
            "Tasks that reached a final state",
            m.tasks_finished.clone(),
        );
        r.register(
            "runs_ended",
            "Runs that ended, by outcome",
            m.runs_ended.clone(),
        );
        r.register(
            "runs_forgotten",
            "Ended runs forgotten because they ended longer ago than the run retention",
            m.runs_forgotten.clone(),
        );
        if let Some(c) = cache {
            let cache = r.sub_registry_with_prefix("cache");
            cache.register("hits", "Cache reads that found the entry", c.hits.clone());
            cache.register("misses", "Cache reads that did not", c.misses.clone());
            cache.register("stored", "Entries written", c.stored.clone());
            cache.register(
                "conflicts",
                "Writes refused because the entry exists",
                c.conflicts.clone(),
            );
            cache.register(
                "too_large",
                "Writes refused as larger than the entry limit",
                c.too_large.clone(),
            );
            cache.register("bytes_in", "Bytes written to the cache", c.bytes_in.clone());
            cache.register(
                "bytes_out",
                "Bytes read from the cache",
                c.bytes_out.clone(),
            );
            cache.register("evicted", "Entries evicted", c.evicted.clone());
        }
        for status in ["succeeded", "failed", "skipped"] {
            let _ = m.tasks_finished.get_or_create(&StatusLabel { status });
        }
        m.registry = registry;
        m
    }

    /// Counts what an action says happened.
    pub fn observe(&self, action: &Action) {
        match action {
            Action::Lease { .. } => {
                self.leases_granted.inc();
            }
            Action::Refused { message, .. } => {
                let message = match message {
                    MessageKind::Started => "started",
                    MessageKind::Output => "output",
                    MessageKind::Result => {
                        self.results_refused.inc();
                        "result"
                    }
                };
                self.messages_refused
                    .get_or_create(&MessageLabel { message })
                    .inc();
            }
            Action::Run { event, .. } => match event {
                RunEvent::TaskFinished(f) if f.status != TaskStatus::Skipped => {
                    self.task_duration
                        .get_or_create(&TargetLabel {
                            target: f.target.clone(),
                        })
                        .observe(f.duration.as_secs_f64());
                    if !f.retrying {
                        let status = match f.status {
                            TaskStatus::Succeeded => "succeeded",
                            _ => "failed",
                        };
                        self.tasks_finished
                            .get_or_create(&StatusLabel { status })
                            .inc();
                    }
                }
                RunEvent::TaskFinished(f) if !f.retrying => {
                    let status = match f.status {
                        TaskStatus::Succeeded => "succeeded",
                        TaskStatus::Failed => "failed",
                        _ => "skipped",
                    };
                    self.tasks_finished
                        .get_or_create(&StatusLabel { status })
                        .inc();
                }
                RunEvent::TaskRequeued { .. } => {
                    self.leases_reclaimed.inc();
                }
                RunEvent::RunDone { success, .. } => {
                    let status = if *success { "succeeded" } else { "failed" };
                    self.runs_ended.get_or_create(&StatusLabel { status }).inc();
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// Whether the last commit went through.
    pub fn store_writable(&self) -> bool {
        self.store_writable.get() == 1
    }

    pub fn set_store_writable(&self, ok: bool) {
        self.store_writable.set(i64::from(ok));
    }

    pub fn store_commit(&self, took: Duration) {
        self.store_commit.observe(took.as_secs_f64());
    }

    pub fn grpc_request(&self, method: &str, code: &'static str, took: Duration) {
        self.grpc_requests
            .get_or_create(&MethodCodeLabel {
                method: method.to_string(),
                code,
            })
            .inc();
        self.grpc_latency
            .get_or_create(&MethodLabel {
                method: method.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn runs_forgotten(&self, n: u64) {
        self.runs_forgotten.inc_by(n);
    }

    /// The text exposition, with the gauges set from the scheduler's.
    pub fn render(&self, g: &Gauges) -> String {
        let set = |gauge: &Gauge, v: usize| {
            gauge.set(v as i64);
        };
        set(&self.agents_connected, g.agents_connected);
        set(&self.agent_slots, g.slots);
        set(&self.tasks_running, g.running);
        set(&self.tasks_queued, g.queued);
        set(&self.runs_active, g.runs_active);
        self.template_agents.clear();
        self.template_free_slots.clear();
        self.template_ready.clear();
        self.template_running.clear();
        for (template, t) in &g.by_template {
            let label = TemplateLabel {
                launch_template: template.clone(),
            };
            set(&self.template_agents.get_or_create(&label), t.agents);
            set(
                &self.template_free_slots.get_or_create(&label),
                t.free_slots,
            );
            set(&self.template_ready.get_or_create(&label), t.ready);
            set(&self.template_running.get_or_create(&label), t.running);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use drover_scheduler::state::{AgentId, LeaseGrant, LeaseId, TaskFinished, TemplateGauges};

    use super::*;

    #[test]
    fn every_documented_series_is_exported_with_its_labels() {
        let cache = CacheCounters::default();
        let m = Metrics::new(Some(&cache));
        m.observe(&Action::Lease {
            agent: AgentId(1),
            grant: LeaseGrant {
                lease: LeaseId(1),
                token: 1,
                run_id: "r".into(),
                task_id: "a:build".into(),
                command: "true".into(),
                env: Default::default(),
                timeout: None,
                attempt: 1,
                repository: String::new(),
                commit: String::new(),
            },
        });
        m.observe(&Action::Run {
            run_id: "r".into(),
            event: RunEvent::TaskFinished(TaskFinished {
                task: "a:build".into(),
                target: "build".into(),
                submissions: vec![1],
                status: TaskStatus::Succeeded,
                exit_code: Some(0),
                reason: String::new(),
                agent: "a1".into(),
                duration: Duration::from_secs(3),
                attempt: 1,
                flaky: false,
                retrying: false,
            }),
        });
        m.observe(&Action::Run {
            run_id: "r".into(),
            event: RunEvent::RunDone {
                success: true,
                reason: String::new(),
            },
        });
        m.grpc_request(
            "drover.v1.RunService/StartRun",
            "OK",
            Duration::from_millis(2),
        );
        m.store_commit(Duration::from_millis(1));
        cache.hits.inc();
        let mut g = Gauges::default();
        g.by_template.insert(
            "linux".into(),
            TemplateGauges {
                agents: 2,
                free_slots: 3,
                ready: 5,
                running: 1,
            },
        );
        let text = m.render(&g);
        for series in [
            "drover_agents_connected ",
            "drover_agent_slots ",
            "drover_tasks_running ",
            "drover_tasks_queued ",
            "drover_runs_active ",
            "drover_store_writable ",
            "drover_template_agents{launch_template=\"linux\"} 2",
            "drover_template_free_slots{launch_template=\"linux\"} 3",
            "drover_tasks_ready{launch_template=\"linux\"} 5",
            "drover_template_running{launch_template=\"linux\"} 1",
            "drover_task_duration_seconds_bucket{le=",
            "drover_task_duration_seconds_count{target=\"build\"} 1",
            "drover_store_commit_seconds_count 1",
            "drover_grpc_requests_total{method=\"drover.v1.RunService/StartRun\",code=\"OK\"} 1",
            "drover_grpc_request_duration_seconds_count{method=\"drover.v1.RunService/StartRun\"} 1",
            "drover_leases_granted_total 1",
            "drover_leases_reclaimed_total 0",
            "drover_results_refused_total 0",
            "drover_tasks_finished_total{status=\"succeeded\"} 1",
            "drover_runs_ended_total{status=\"succeeded\"} 1",
            "drover_runs_forgotten_total 0",
            "drover_cache_hits_total 1",
            "drover_cache_misses_total 0",
            "drover_cache_bytes_in_total 0",
            "drover_cache_bytes_out_total 0",
        ] {
            assert!(text.contains(series), "`{series}` missing from:\n{text}");
        }
    }
}
