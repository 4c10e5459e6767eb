//! Prometheus metrics through one registry: counters fed from the scheduler's outcomes and the
//! cache's counters, gauges read from the scheduler when `/metrics` is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
            registry: Registry::default(),
        };
        let r = &mut registry;
        // (The registry is filled below, then put in place of the empty one.)
        r.register(
            "agents_connected",
            "Agents with an open stream.",
            m.agents_connected.clone(),
        );
        r.register(
            "agent_slots",
            "Slots of connected agents.",
            m.agent_slots.clone(),
        );
        r.register(
            "tasks_running",
            "Tasks running on agents.",
            m.tasks_running.clone(),
        );
        r.register(
            "tasks_queued",
            "Tasks waiting for dependencies or a slot.",
            m.tasks_queued.clone(),
        );
        r.register(
            "runs_active",
            "Runs that have not ended.",
            m.runs_active.clone(),
        );
        r.register(
            "store_writable",
            "1 while the store takes writes; 0 after a failed commit (nothing new is acknowledged).",
            m.store_writable.clone(),
        );
        r.register(
            "template_agents",
            "Connected agents per launch template.",
            m.template_agents.clone(),
        );
        r.register(
            "template_free_slots",
            "Free slots of connected agents that take work, per launch template.",
            m.template_free_slots.clone(),
        );
        r.register(
            "tasks_ready",
            "Ready tasks each launch template may run (what an autoscaler scales a pool on).",
            m.template_ready.clone(),
        );
        r.register(
            "leases_granted",
            "Leases handed to agents.",
            m.leases_granted.clone(),
        );
        r.register(
            "leases_reclaimed",
            "Leases taken back from agents (lost, drained, restarted) and queued again.",
            m.leases_reclaimed.clone(),
        );
        r.register(
            "results_refused",
            "Results refused because their lease was revoked or unknown.",
            m.results_refused.clone(),
        );
        r.register(
            "messages_refused",
            "Agent messages refused because their lease was not the agent's active lease.",
            m.messages_refused.clone(),
        );
        r.register(
            "tasks_finished",
            "Tasks that reached a final state.",
            m.tasks_finished.clone(),
        );
        r.register(
            "runs_ended",
            "Runs that ended, by outcome.",
            m.runs_ended.clone(),
        );
        r.register(
            "runs_forgotten",
            "Ended runs forgotten because they ended longer ago than the run retention.",
            m.runs_forgotten.clone(),
        );
        if let Some(c) = cache {
            let cache = r.sub_registry_with_prefix("cache");
            cache.register("hits", "Cache reads that found the entry.", c.hits.clone());
            cache.register("misses", "Cache reads that did not.", c.misses.clone());
            cache.register("stored", "Entries written.", c.stored.clone());
            cache.register(
                "conflicts",
                "Writes refused because the entry exists.",
                c.conflicts.clone(),
            );
            cache.register(
                "too_large",
                "Writes refused as larger than the entry limit.",
                c.too_large.clone(),
            );
            cache.register(
                "bytes_in",
                "Bytes written to the cache.",
                c.bytes_in.clone(),
            );
            cache.register(
                "bytes_out",
                "Bytes read from the cache.",
                c.bytes_out.clone(),
            );
            cache.register("evicted", "Entries evicted.", c.evicted.clone());
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
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
