//! Pictures of a simulated schedule: a text timeline per agent slot, and an SVG Gantt chart.

use std::fmt::Write as _;
use std::time::Duration;

use crate::duration::format_duration;

use super::Outcome;

/// Rows of the timeline: one per agent slot, in fleet order.
fn rows(outcome: &Outcome) -> Vec<(usize, u32)> {
    outcome
        .agents
        .iter()
        .enumerate()
        .flat_map(|(k, a)| (0..a.slots).map(move |s| (k, s)))
        .collect()
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format_duration(Duration::from_secs(d.as_secs()))
    }
}

/// A summary, then per agent slot a bar (`#` busy, `.` idle) and the tasks it ran.
pub fn text(outcome: &Outcome) -> String {
    const WIDTH: usize = 60;
    let mut out = String::new();
    let span = outcome.makespan.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "policy {}: makespan {} (lower bound {}, {:.1}% above), utilization {:.1}%, {} tasks on {} agents",
        outcome.policy,
        secs(outcome.makespan),
        secs(outcome.lower_bound),
        gap(outcome.makespan, outcome.lower_bound) * 100.0,
        outcome.utilization * 100.0,
        outcome.schedule.len(),
        outcome.agents.len(),
    );
    if outcome.cold_starts > 0 {
        let _ = writeln!(
            out,
            "{} agent(s) prepared a workspace first (cold start); the others held it",
            outcome.cold_starts
        );
    }
    let name_width = outcome
        .agents
        .iter()
        .map(|a| a.name.len() + 3)
        .max()
        .unwrap_or(0);
    // Each slot's tasks, in one pass over the schedule (a million tasks on hundreds of slots).
    let mut by_slot: std::collections::HashMap<(&str, u32), Vec<_>> =
        std::collections::HashMap::new();
    for p in &outcome.schedule {
        by_slot
            .entry((p.agent.as_str(), p.slot))
            .or_default()
            .push(p);
    }
    for (k, slot) in rows(outcome) {
        let agent = &outcome.agents[k];
        let mine = by_slot
            .remove(&(agent.name.as_str(), slot))
            .unwrap_or_default();
        let mut bar = vec!['.'; WIDTH];
        for p in &mine {
            let a = (p.start_ms.as_secs_f64() / span * WIDTH as f64).floor() as usize;
            let b = (p.end_ms.as_secs_f64() / span * WIDTH as f64).ceil() as usize;
            for c in bar.iter_mut().take(b.min(WIDTH)).skip(a.min(WIDTH)) {
                *c = '#';
            }
        }
        let label = format!("{}/{}", agent.name, slot);
        // (A sum of nothing would be -0.0, printed as "-0.0% busy".)
        let busy = mine
            .iter()
            .map(|p| (p.end_ms - p.start_ms).as_secs_f64())
            .fold(0.0, |a, b| a + b);
        let _ = writeln!(
            out,
            "{label:<name_width$} |{}| {:>5.1}% busy",
            bar.iter().collect::<String>(),
            busy / span * 100.0
        );
        for p in mine {
            let _ = writeln!(
                out,
                "{:<name_width$}   {:>9} - {:<9} {}",
                "",
                secs(p.start_ms),
                secs(p.end_ms),
                p.task
            );
        }
    }
    out
}

/// How far `value` is above `bound`, as a fraction.
pub fn gap(value: Duration, bound: Duration) -> f64 {
    if bound.is_zero() {
        0.0
    } else {
        value.as_secs_f64() / bound.as_secs_f64() - 1.0
    }
}

/// A Gantt chart: one row per agent slot, one bar per task (coloured by target), idle time
/// left blank; hovering a bar shows the task and its times.
pub fn svg(outcome: &Outcome) -> String {
    const LEFT: f64 = 170.0;
    const WIDTH: f64 = 1000.0;
    const ROW: f64 = 22.0;
    const TOP: f64 = 40.0;
    let rows = rows(outcome);
    let height = TOP + ROW * rows.len() as f64 + 30.0;
    let span = outcome.makespan.as_secs_f64().max(1e-9);
    let x = |d: Duration| LEFT + d.as_secs_f64() / span * WIDTH;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        LEFT + WIDTH + 20.0
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="13">{} — makespan {}, lower bound {}, utilization {:.1}%</text>"#,
        escape(&outcome.policy),
        secs(outcome.makespan),
        secs(outcome.lower_bound),
        outcome.utilization * 100.0
    );
    // Time axis: ten ticks.
    for k in 0..=10 {
        let t = Duration::from_secs_f64(span * k as f64 / 10.0);
        let tx = x(t);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            height - 28.0,
            height - 14.0,
            secs(t)
        );
    }
    for (row, (k, slot)) in rows.iter().enumerate() {
        let agent = &outcome.agents[*k];
        let y = TOP + ROW * row as f64;
        let _ = writeln!(
            out,
            r##"<text x="10" y="{:.1}">{}/{}</text><rect x="{LEFT}" y="{:.1}" width="{WIDTH}" height="{:.1}" fill="#f4f4f4"/>"##,
            y + ROW * 0.65,
            escape(&agent.name),
            slot,
            y + 2.0,
            ROW - 4.0
        );
        for p in outcome
            .schedule
            .iter()
            .filter(|p| p.agent == agent.name && p.slot == *slot)
        {
            let (x0, x1) = (x(p.start_ms), x(p.end_ms));
            let target = p.task.rsplit(':').next().unwrap_or(&p.task);
            let _ = writeln!(
                out,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" stroke="#fff" stroke-width="0.5"><title>{} ({} - {})</title></rect>"##,
                y + 2.0,
                (x1 - x0).max(0.5),
                ROW - 4.0,
                colour(target),
                escape(&p.task),
                secs(p.start_ms),
                secs(p.end_ms)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A stable colour per name.
fn colour(name: &str) -> String {
    let h = name.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    format!("hsl({}, 55%, 55%)", h % 360)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
