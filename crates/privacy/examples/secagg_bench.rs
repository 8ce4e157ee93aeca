//! Prints the cost of secure aggregation against plain summation:
//! `cargo run -p fedpace-privacy --release --example secagg_bench [clients] [parameters]`
//! (defaults 100 clients × 100 000 parameters). One thread; times and bytes per round.

use fedpace_privacy::secagg::{bench_secagg, SecAggBench};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| {
        a.parse::<usize>()
            .unwrap_or_else(|_| panic!("expected a number of clients or parameters, got {a:?}"))
    });
    let clients = args.next().unwrap_or(100);
    let dimension = args.next().unwrap_or(100_000);
    println!(
        "| protocol | k | dropped | plain s | secagg clients s (sum) | secagg server s | time ratio | \
         upload B/client plain | upload B/client secagg | expansion | download B/client | max |err| |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let runs = [
        ("SecAgg", None, 0),
        ("SecAgg", None, clients / 10),
        ("SecAgg+", Some(odd_log_neighbourhood(clients)), 0),
        (
            "SecAgg+",
            Some(odd_log_neighbourhood(clients)),
            clients / 10,
        ),
    ];
    for (name, k, dropped) in runs {
        match bench_secagg(clients, dimension, k, dropped, 1) {
            Ok(b) => print_row(name, &b),
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
}

/// A neighbourhood of about 3·log2(n), made odd.
fn odd_log_neighbourhood(n: usize) -> usize {
    let k = (3.0 * (n as f64).log2()).ceil() as usize;
    k | 1
}

fn print_row(name: &str, b: &SecAggBench) {
    println!(
        "| {name} | {} | {} | {:.4} | {:.3} | {:.3} | {:.0}× | {} | {:.0} | {:.3}× | {:.0} | {:.2e} |",
        b.neighbourhood,
        b.dropped,
        b.plain_seconds,
        b.secagg_client_seconds,
        b.secagg_server_seconds,
        b.time_ratio(),
        b.plain_upload_bytes_per_client,
        b.secagg_upload_bytes_per_client,
        b.upload_expansion(),
        b.secagg_download_bytes_per_client,
        b.max_abs_error
    );
}
