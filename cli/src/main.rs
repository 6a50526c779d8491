//! `rdconn`: the operator's CLI for the RD Station connection service.

mod args;
mod client;
mod commands;
mod import;
mod output;
mod signing;

use args::{Cli, Command, Signing};
use client::{Api, is_loopback};
use signing::Signer;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse_with_globals_described_once();
    let sign = match cli.sign {
        Signing::Always => true,
        Signing::Never => false,
        Signing::Auto => !is_loopback(&cli.url),
    };
    let signer = if sign {
        match Signer::from_environment(cli.region.clone(), cli.url.host_str()).await {
            Ok(signer) => Some(signer),
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let api = Api::new(cli.url.clone(), signer).in_tenant(cli.tenant.clone());
    let command = match &cli.command {
        Command::Call(command) => command,
        Command::Import { file } => return import_file(&api, file, cli.json).await,
    };
    match commands::run(&api, command, cli.json).await {
        Ok(out) => {
            println!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `rdconn import FILE`: success only when every line landed.
async fn import_file(api: &Api, file: &std::path::Path, as_json: bool) -> std::process::ExitCode {
    let lines = match import::read_lines(file) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return std::process::ExitCode::from(2);
        }
    };
    let report = import::run(api, lines, as_json).await;
    if as_json {
        println!("{}", report.summary_json());
    } else {
        println!("{}", report.summary());
    }
    if report.all_landed() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
