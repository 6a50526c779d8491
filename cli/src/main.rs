//! `rdconn`: the operator's CLI for the RD Station connection service.

mod args;
mod client;
mod commands;
mod output;
mod signing;

use args::{Cli, Signing};
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
    match commands::run(&api, &cli.command, cli.json).await {
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
