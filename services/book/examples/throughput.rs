//! Prints the engine's throughput plainly:
//! `cargo run --release -p capex-book --example throughput [-- COMMANDS [RUNS]]`.

use std::time::Instant;

use capex_book::Event;

#[path = "../benches/workload/mod.rs"]
mod workload;

const COMMANDS: usize = 1_000_000;
const SEED: u64 = 0x00C0_FFEE;
const RUNS: usize = 5;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a count"));
    let count = args.next().unwrap_or(COMMANDS);
    let runs = args.next().unwrap_or(RUNS).max(1);
    let (warm, commands) = workload::workload(SEED, count);
    println!("{} commands, book warmed to {} resting orders", commands.len(), warm.len());
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut book = warm.clone();
        let started = Instant::now();
        let events = workload::run(&mut book, &commands);
        let elapsed = started.elapsed();
        let rate = commands.len() as f64 / elapsed.as_secs_f64();
        println!(
            "{:>8.1} ms  {:>12.0} commands/s  {events} events, {} resting after",
            elapsed.as_secs_f64() * 1e3,
            rate,
            book.len()
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.0} commands/s", rates[runs / 2]);

    // What the stream is made of, so the figure can be judged.
    let mut book = warm.clone();
    let mut out = Vec::new();
    let (mut trades, mut rejected, mut cancelled, mut expired) = (0, 0, 0, 0);
    for &command in &commands {
        out.clear();
        book.apply(command, &mut out);
        for event in &out {
            match event {
                Event::Trade { .. } => trades += 1,
                Event::Rejected { .. } => rejected += 1,
                Event::Cancelled { .. } => cancelled += 1,
                Event::Expired { .. } => expired += 1,
                _ => {}
            }
        }
    }
    println!("trades {trades}, cancelled {cancelled}, expired {expired}, rejected {rejected}");
}
