//! The `gateway` command.

use clap::Parser;
use gateway::cli::{Cli, Command, EtcdArgs};
use gateway::settings::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: a proxied request allocates and frees dozens of small
/// blocks (header maps, buffers, tasks); docs/benchmarks.md has what it saves.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Apply { file, etcd, dry_run } => with_runtime(apply(file, etcd, dry_run)),
        Command::Dump { etcd, with_secrets } => with_runtime(dump(etcd, with_secrets)),
        Command::Run(args) => {
            let settings = match Settings::load(args.config.as_deref(), &args.flags) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("gateway: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // One worker: a single-threaded runtime, which skips the work-stealing machinery a
            // lone worker has no use for (docs/benchmarks.md).
            let mut runtime = match settings.node.worker_threads {
                1 => tokio::runtime::Builder::new_current_thread(),
                0 => tokio::runtime::Builder::new_multi_thread(),
                n => {
                    let mut builder = tokio::runtime::Builder::new_multi_thread();
                    builder.worker_threads(n);
                    builder
                }
            };
            runtime.enable_all();
            let result = runtime.build().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run(settings)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "node failed");
                    eprintln!("gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs a node, with logging and trace export around it.
async fn run(settings: Settings) -> anyhow::Result<()> {
    let tracing = gateway::telemetry::init(&settings)?;
    let result = gateway::node::run(settings).await;
    if let Some(tracing) = tracing {
        // Flushing blocks; keep it off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    }
    result
}

/// Runs a one-shot command on a small runtime; its error is printed and exits 1.
fn with_runtime(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The etcd settings for `apply` and `dump`: defaults, `GATEWAY_*` variables, then the flags.
fn etcd_config(args: EtcdArgs) -> anyhow::Result<config_sync::etcd::EtcdConfig> {
    let settings = Settings::load(None, args)?;
    gateway::node::etcd_config(&settings)
}

async fn apply(file: PathBuf, etcd: EtcdArgs, dry_run: bool) -> anyhow::Result<()> {
    let config = config_sync::FileSource::new(&file).load()?;
    let etcd = etcd_config(etcd)?;
    let writer = config_sync::etcd::EtcdWriter::connect(&etcd).await?;
    let report = writer.apply(&config, dry_run).await?;
    for (verb, keys) in [("create", &report.created), ("change", &report.changed), ("delete", &report.deleted)] {
        for key in keys {
            println!("{verb} {}/{key}", etcd.prefix);
        }
    }
    let counts =
        format!("{} created, {} changed, {} deleted", report.created.len(), report.changed.len(), report.deleted.len());
    match report.revision {
        _ if report.is_empty() => println!("no changes: etcd already holds {}", file.display()),
        Some(revision) => println!("applied at revision {revision}: {counts}"),
        None => println!("dry run: {counts}; nothing written"),
    }
    Ok(())
}

async fn dump(etcd: EtcdArgs, with_secrets: bool) -> anyhow::Result<()> {
    let etcd = etcd_config(etcd)?;
    let writer = config_sync::etcd::EtcdWriter::connect(&etcd).await?;
    let (snapshot, revision) = writer.read_config().await?;
    println!("# {} at revision {revision}", etcd.prefix);
    for error in &snapshot.errors {
        eprintln!("gateway: left out {}: {}", error.key, error.message);
    }
    print!("{}", config_sync::declarative::to_yaml(&snapshot.config, with_secrets));
    Ok(())
}

fn validate(file: &std::path::Path) -> ExitCode {
    match config_sync::FileSource::new(file).load() {
        Ok(config) => {
            println!(
                "{}: ok ({} services, {} routes, {} upstreams, {} consumers)",
                file.display(),
                config.services.len(),
                config.routes.len(),
                config.upstreams.len(),
                config.consumers.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
