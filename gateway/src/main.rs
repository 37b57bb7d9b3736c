//! The `gateway` command.

use clap::Parser;
use gateway::cli::{Cli, Command};
use gateway::settings::Settings;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Run(args) => {
            let settings = match Settings::load(args.config.as_deref(), &args.flags) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("gateway: {e}");
                    return ExitCode::FAILURE;
                }
            };
            gateway::logging::init(&settings);
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.enable_all();
            if settings.worker_threads > 0 {
                runtime.worker_threads(settings.worker_threads);
            }
            let result =
                runtime.build().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(gateway::node::run(settings)));
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

fn validate(file: &std::path::Path) -> ExitCode {
    match config_sync::FileSource::new(file).load() {
        Ok(config) => {
            println!(
                "{}: ok ({} services, {} routes, {} upstreams)",
                file.display(),
                config.services.len(),
                config.routes.len(),
                config.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
