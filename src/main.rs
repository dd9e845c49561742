use std::process::ExitCode;

use clap::Parser;
use pipedrive_whatsapp::cli::{self, Cli};

/// jemalloc rather than the system allocator: in the profiles glibc's malloc and free took a
/// quarter of the service's CPU under load, much of it consolidating free lists after large
/// buffers were freed. With jemalloc the reads answer 11–18 % more requests, and memory stays
/// within its targets (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("error: .env: {error}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
