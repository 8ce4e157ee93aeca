//! `cargo run -p fedpace-data --example fetch -- NAME [DATA_DIR]`: fetches one data set
//! (what `fedpace datasets fetch NAME` does), then lists the catalog.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprintln!("usage: fetch NAME [DATA_DIR]");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("data"));
    if let Err(e) = fedpace_data::fetch(name, &dir) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    for d in fedpace_data::catalog(&dir) {
        println!(
            "{:14} {:5} {}",
            d.name,
            if d.present { "ok" } else { "-" },
            d.package
        );
    }
}
