//! OpenTelemetry: a run is a trace and each task attempt a span in it. With `--otlp-endpoint`
//! (or `OTEL_EXPORTER_OTLP_ENDPOINT`) spans go out over OTLP/HTTP. A `TRACEPARENT` the main
//! job sends makes the run a child of the CI pipeline's trace.
//!
//! The tracer watches what the actor journals (runs opened, tasks started, attempts ended,
//! runs ended) and builds spans with the times those happened, so nothing in the scheduler
//! knows about tracing.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};

use drover_scheduler::state::{RunEvent, TaskStatus};

/// An attempt that started, waiting for its end.
struct Open {
    started: SystemTime,
    agent: String,
    template: String,
    queued_ms: u64,
}

struct RunTrace {
    cx: Context,
    /// When the run's tasks became waiting (its latest submission, or an attempt's end).
    waiting_since: HashMap<String, SystemTime>,
    submitted: SystemTime,
    open: HashMap<(String, u32), Open>,
}

pub struct RunTracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    runs: HashMap<String, RunTrace>,
}

impl RunTracer {
    /// Spans to an OTLP/HTTP collector at `endpoint` (e.g. `http://collector:4318`).
    pub fn otlp(endpoint: &str) -> Result<RunTracer, String> {
        use opentelemetry_otlp::WithExportConfig;
        let url = match endpoint.trim_end_matches('/') {
            e if e.ends_with("/v1/traces") => e.to_string(),
            e => format!("{e}/v1/traces"),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .build()
            .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
        Ok(Self::with_exporter(exporter, true))
    }

    /// Spans to any exporter; `batch` sends them in batches from a thread of their own.
    pub fn with_exporter(exporter: impl SpanExporter + 'static, batch: bool) -> RunTracer {
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("drover-coordinator")
            .build();
        let builder = SdkTracerProvider::builder().with_resource(resource);
        let provider = if batch {
            builder.with_batch_exporter(exporter).build()
        } else {
            builder.with_simple_exporter(exporter).build()
        };
        let tracer = provider.tracer("drover");
        RunTracer {
            provider,
            tracer,
            runs: HashMap::new(),
        }
    }

    /// A run opened: its span starts, under the pipeline's trace when `traceparent` names one.
    pub fn run_started(&mut self, run_id: &str, exec: &str, traceparent: &str, at: SystemTime) {
        let parent = parse_traceparent(traceparent)
            .map(|sc| Context::new().with_remote_span_context(sc))
            .unwrap_or_default();
        let span = self
            .tracer
            .span_builder(format!("run {run_id}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(at)
            .with_attributes([
                KeyValue::new("drover.run_id", run_id.to_string()),
                KeyValue::new("drover.ci_execution_id", exec.to_string()),
            ])
            .start_with_context(&self.tracer, &parent);
        self.runs.insert(
            run_id.to_string(),
            RunTrace {
                cx: parent.with_span(span),
                waiting_since: HashMap::new(),
                submitted: at,
                open: HashMap::new(),
            },
        );
    }

    /// A graph was submitted: its tasks wait from now.
    pub fn submitted(&mut self, run_id: &str, at: SystemTime) {
        if let Some(run) = self.runs.get_mut(run_id) {
            run.submitted = at;
        }
    }

    /// A run event, with the time it was recorded.
    pub fn event(&mut self, run_id: &str, event: &RunEvent, at: SystemTime) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        match event {
            RunEvent::TaskStarted {
                task,
                agent,
                template,
                attempt,
                ..
            } => {
                let since = run
                    .waiting_since
                    .get(task)
                    .copied()
                    .unwrap_or(run.submitted);
                let queued_ms = at.duration_since(since).unwrap_or_default().as_millis() as u64;
                run.open.insert(
                    (task.clone(), *attempt),
                    Open {
                        started: at,
                        agent: agent.clone(),
                        template: template.clone(),
                        queued_ms,
                    },
                );
            }
            RunEvent::TaskFinished(f) => {
                if let Some(open) = run.open.remove(&(f.task.clone(), f.attempt)) {
                    let ok = f.status == TaskStatus::Succeeded;
                    let outcome = if f.retrying {
                        "retrying".to_string()
                    } else {
                        f.status.to_string()
                    };
                    let mut attrs = vec![
                        KeyValue::new("drover.exit_code", i64::from(f.exit_code.unwrap_or(-1))),
                        KeyValue::new("drover.outcome", outcome),
                    ];
                    if !f.reason.is_empty() {
                        attrs.push(KeyValue::new("drover.reason", f.reason.clone()));
                    }
                    let status = if ok {
                        Status::Ok
                    } else {
                        Status::error(f.reason.clone())
                    };
                    attempt_span(
                        &self.tracer,
                        &run.cx,
                        &f.task,
                        f.attempt,
                        open,
                        at,
                        attrs,
                        status,
                    );
                }
                run.waiting_since.insert(f.task.clone(), at);
            }
            RunEvent::TaskRequeued {
                task,
                reason,
                attempt,
                ..
            } => {
                // The attempt number of a requeued task is already the next one's.
                let key = run
                    .open
                    .keys()
                    .find(|(t, _)| t == task)
                    .cloned()
                    .unwrap_or((task.clone(), *attempt));
                if let Some(open) = run.open.remove(&key) {
                    let attrs = vec![
                        KeyValue::new("drover.outcome", "requeued"),
                        KeyValue::new("drover.reason", reason.clone()),
                    ];
                    attempt_span(
                        &self.tracer,
                        &run.cx,
                        task,
                        key.1,
                        open,
                        at,
                        attrs,
                        Status::error(reason.clone()),
                    );
                }
                run.waiting_since.insert(task.clone(), at);
            }
            RunEvent::RunDone { success, reason } => {
                if let Some(run) = self.runs.remove(run_id) {
                    let span = run.cx.span();
                    span.set_attribute(KeyValue::new("drover.success", *success));
                    span.set_status(if *success {
                        Status::Ok
                    } else {
                        Status::error(reason.clone())
                    });
                    span.end_with_timestamp(at);
                }
            }
            _ => {}
        }
    }

    /// Sends what is pending and stops.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

#[allow(clippy::too_many_arguments)]
fn attempt_span(
    tracer: &SdkTracer,
    parent: &Context,
    task: &str,
    attempt: u32,
    open: Open,
    end: SystemTime,
    extra: Vec<KeyValue>,
    status: Status,
) {
    let mut attrs = vec![
        KeyValue::new("drover.task", task.to_string()),
        KeyValue::new("drover.attempt", i64::from(attempt)),
        KeyValue::new("drover.agent", open.agent),
        KeyValue::new("drover.launch_template", open.template),
        KeyValue::new("drover.queued_ms", open.queued_ms as i64),
    ];
    attrs.extend(extra);
    let mut span = tracer
        .span_builder(format!("task {task}"))
        .with_kind(SpanKind::Internal)
        .with_start_time(open.started)
        .with_attributes(attrs)
        .start_with_context(tracer, parent);
    span.set_status(status);
    span.end_with_timestamp(end);
}

/// A W3C `traceparent` (`00-TRACEID-SPANID-FLAGS`), if it is one.
pub fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use drover_scheduler::state::TaskFinished;
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    use super::*;

    fn finished(task: &str, status: TaskStatus, attempt: u32, retrying: bool) -> RunEvent {
        RunEvent::TaskFinished(TaskFinished {
            task: task.into(),
            target: "build".into(),
            submissions: vec![1],
            status,
            exit_code: Some(if status == TaskStatus::Succeeded {
                0
            } else {
                2
            }),
            reason: if status == TaskStatus::Succeeded {
                String::new()
            } else {
                "exit code 2".into()
            },
            agent: "a1".into(),
            duration: Duration::from_secs(1),
            attempt,
            flaky: false,
            retrying,
        })
    }

    fn started(task: &str, attempt: u32) -> RunEvent {
        RunEvent::TaskStarted {
            task: task.into(),
            submissions: vec![1],
            agent: "a1".into(),
            template: "linux".into(),
            attempt,
        }
    }

    #[test]
    fn a_run_is_a_trace_under_the_pipelines_and_each_attempt_a_span_in_it() {
        let exporter = InMemorySpanExporter::default();
        let mut t = RunTracer::with_exporter(exporter.clone(), false);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let pipeline = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        t.run_started("run-1", "exec-1", pipeline, t0);
        t.submitted("run-1", at(1));
        t.event("run-1", &started("app:build", 1), at(3));
        t.event(
            "run-1",
            &finished("app:build", TaskStatus::Failed, 1, true),
            at(5),
        );
        t.event("run-1", &started("app:build", 2), at(6));
        t.event(
            "run-1",
            &finished("app:build", TaskStatus::Succeeded, 2, false),
            at(9),
        );
        t.event(
            "run-1",
            &RunEvent::RunDone {
                success: true,
                reason: "done".into(),
            },
            at(10),
        );
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 3, "{spans:#?}");
        let run = spans
            .iter()
            .find(|s| s.name.starts_with("run "))
            .expect("the run's span");
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(
            run.span_context.trace_id(),
            trace,
            "the run is in the pipeline's trace"
        );
        assert_eq!(
            run.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        let tasks: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "task app:build")
            .collect();
        assert_eq!(tasks.len(), 2);
        for s in &tasks {
            assert_eq!(
                s.parent_span_id,
                run.span_context.span_id(),
                "a task's span is the run's child"
            );
            assert_eq!(s.span_context.trace_id(), trace);
        }
        let attr = |s: &opentelemetry_sdk::trace::SpanData, key: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        let first = tasks
            .iter()
            .find(|s| attr(s, "drover.attempt").as_deref() == Some("1"))
            .unwrap();
        assert_eq!(attr(first, "drover.agent").as_deref(), Some("a1"));
        assert_eq!(
            attr(first, "drover.launch_template").as_deref(),
            Some("linux")
        );
        assert_eq!(attr(first, "drover.exit_code").as_deref(), Some("2"));
        assert_eq!(
            attr(first, "drover.queued_ms").as_deref(),
            Some("2000"),
            "submitted at 1s, started at 3s"
        );
        assert_eq!(first.start_time, at(3));
        assert_eq!(first.end_time, at(5));
        let second = tasks
            .iter()
            .find(|s| attr(s, "drover.attempt").as_deref() == Some("2"))
            .unwrap();
        assert_eq!(
            attr(second, "drover.queued_ms").as_deref(),
            Some("1000"),
            "waiting since the first attempt ended"
        );
        assert_eq!(run.end_time, at(10));
    }

    #[test]
    fn a_bad_traceparent_starts_a_trace_of_its_own() {
        assert!(parse_traceparent("").is_none());
        assert!(parse_traceparent("00-zz-00f067aa0ba902b7-01").is_none());
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some()
        );
    }
}
