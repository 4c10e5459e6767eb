//! Starting the actor: the store is read, the scheduler takes back what it held, the run logs
//! come back numbered as they were.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use drover_proto::v1 as pb;
use drover_scheduler::state::{Config, RunSpec, Scheduler};
use tokio::sync::mpsc;

use super::{Actor, Conns, Handle, Retention};
use crate::auth::{Auth, LeaseAccess};
use crate::convert;
use crate::error::CoordError;
use crate::logstore::Logs;
use crate::metrics::Metrics;
use crate::otel::RunTracer;
use crate::persist::Store;
use crate::runlog::RunLog;
use crate::store::DurationStore;

/// How many commands may wait for the actor.
const QUEUE: usize = 1024;

/// How far lease ids and fencing tokens skip ahead on a restart: more than could ever have
/// been handed out in the batches not yet stored when the coordinator stopped (a few
/// batches, each with at most a lease per free slot and per result it took in).
pub const ID_GAP_AFTER_RESTART: u64 = 1 << 32;

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        data_dir: PathBuf,
        task_logs: Logs,
        retention: Retention,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
        cache_url: String,
        tracer: Option<RunTracer>,
    ) -> Result<(Actor, Handle), CoordError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (mut store, loaded) = Store::open(
            &data_dir,
            |req| RunSpec::from_request(&convert::run_request(req)).map_err(|e| e.to_string()),
            retention.cutoff(SystemTime::now()),
        )?;
        if !loaded.forgotten.is_empty() {
            tracing::info!(
                runs = loaded.forgotten.len(),
                "deleted runs that ended longer ago than the run retention"
            );
        }
        metrics.runs_forgotten(loaded.forgotten.len() as u64);
        metrics.set_store_writable(true);
        let mut durations = DurationStore::open(data_dir)?;
        let mut sched = Scheduler::new(config);
        sched.set_estimates(durations.load());
        for problem in &loaded.problems {
            tracing::warn!(%problem, "store: a record could not be read");
        }
        let epoch = Instant::now();
        let mut restore = loaded.restore;
        // Leases go to agents before their batch is stored (see the actor's docs): ids and
        // tokens handed out after the last commit before a crash are never handed out again.
        if restore.counters.next_lease > 0 {
            restore.counters.next_lease += ID_GAP_AFTER_RESTART;
            restore.counters.next_token += ID_GAP_AFTER_RESTART;
        }
        let restored = sched.restore(epoch.elapsed(), restore);
        for problem in &restored.skipped {
            tracing::warn!(%problem, "restore: left out");
        }
        if restored.runs > 0 {
            tracing::info!(
                runs = restored.runs,
                ended_tasks = restored.tasks_ended,
                leases = restored.leases,
                "restored from the store; leases wait for their agents to reconnect"
            );
        }
        // Output in the events of a store from before task logs were kept apart moves to the
        // task logs once (a task whose log exists is left alone), and out of the run logs.
        let mut logs: HashMap<String, RunLog> = HashMap::new();
        for (run, events) in loaded.logs {
            let mut kept = Vec::with_capacity(events.len());
            let mut moved = std::collections::HashSet::new();
            for (event, submissions) in events {
                match event.event {
                    Some(pb::run_event::Event::TaskOutput(o)) => {
                        if moved.contains(&o.task_id) || !task_logs.exists(&run, &o.task_id) {
                            moved.insert(o.task_id.clone());
                            task_logs.append(&run, &o.task_id, o.attempt, o.data);
                        }
                    }
                    _ => kept.push((event, submissions)),
                }
            }
            logs.insert(run, RunLog::restore(kept));
        }
        for run in sched.run_summaries() {
            logs.entry(run.id).or_default();
        }
        // Leases that were running keep the credentials their tasks hold.
        for (lease, token, run_id) in sched.active_leases() {
            let cache_namespace = sched.cache_namespace(&run_id).map(str::to_string);
            let access = LeaseAccess {
                lease,
                run_id,
                cache_namespace,
            };
            auth.leases.issue(token, access);
        }
        let (db, path) = store.take_database().expect("the store was just opened");
        let writer = super::writer::Writer::start(db, path, Arc::clone(&metrics));
        let handle = Handle {
            tx,
            logs: task_logs.clone(),
        };
        let mut actor = Actor {
            task_logs,
            sched,
            epoch,
            rx,
            store,
            durations,
            logs,
            conns: Conns::default(),
            writer,
            metrics,
            outbox: Vec::new(),
            replies: Vec::new(),
            next_job: 1,
            recorded: Vec::new(),
            acks: Vec::new(),
            unpublished: Default::default(),
            retention,
            auth,
            cache_url,
            tracer,
            launch_templates: String::new(),
        };
        actor.note_end_times();
        Ok((actor, handle))
    }

    /// The launch templates agents get in their Welcome (`--launch-templates`, as written).
    pub fn with_launch_templates(mut self, text: String) -> Self {
        self.launch_templates = text;
        self
    }
}
