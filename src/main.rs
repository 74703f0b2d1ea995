//! The `fitd` binary: parse the command line, set up logging, run the server or print the spec.

use clap::Parser;
use fitd::config::{Cli, Command, LogFormat};
use fitd::startup::Application;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            print!("{}", fitd::http::openapi_yaml()?);
            Ok(())
        }
        Command::Serve(config) => {
            init_tracing(config.log_format);
            let app = Application::build(*config).await?;
            app.run_until_stopped().await
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
