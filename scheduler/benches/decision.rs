//! One scheduling decision at 100,000 ready tasks and 1,000 agents (2,000 slots, all busy):
//! a task ends and the freed slot takes the next task. No framework: set up once, time many
//! decisions, print the mean and percentiles. `cargo bench -p drover-scheduler --bench decision`.

use std::time::Instant;

use drover_scheduler::sim::decision::DecisionBench;

// A benchmark times the crate from outside (the one place here that reads the clock) and
// prints its figures.
#[allow(clippy::disallowed_methods, clippy::print_stdout)]
fn main() {
    let steps = std::env::var("DECISION_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let (tasks, agents) = (100_000, 1_000);
    let started = Instant::now();
    let mut bench = DecisionBench::new(tasks, agents);
    let setup = started.elapsed();
    // Warm up, then time each decision.
    for _ in 0..1_000 {
        bench.step();
    }
    let mut times: Vec<u128> = Vec::with_capacity(steps);
    let all = Instant::now();
    for _ in 0..steps {
        let t = Instant::now();
        assert!(bench.step(), "ran out of running tasks");
        times.push(t.elapsed().as_nanos());
    }
    let total = all.elapsed();
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    println!(
        "decision: {tasks} tasks, {agents} agents; set-up {:.2?}; {steps} decisions with {} still ready at the end",
        setup,
        bench.ready()
    );
    println!(
        "decision: mean {:.2} us, p50 {:.2} us, p99 {:.2} us, max {:.2} us",
        total.as_secs_f64() * 1e6 / steps as f64,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
