//! `keelson-bench`: see the crate documentation (src/lib.rs) for what it measures and how.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match keelson_bench::run(keelson_bench::Cli::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("keelson-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
