//! The `fitd` binary: parse the command line, set up logging, run the server or print the spec.

use anyhow::Context;
use clap::Parser;
use fitd::config::{Cli, Command, LogFormat, TokenArgs, TokenCommand};
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
        Command::Token(args) => token(args).await,
        Command::Serve(config) => {
            init_tracing(config.log_format);
            let app = Application::build(*config).await?;
            app.run_until_stopped().await
        }
        Command::Worker(config) => {
            init_tracing(config.log_format);
            let app = Application::build_worker(*config).await?;
            app.run_until_stopped().await
        }
    }
}

/// `fitd token ...` on the database; the secret of a new token goes alone to stdout.
async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let store = fitd::store::Store::open(&args.db, None)
        .await
        .with_context(|| format!("opening the database {}", args.db))?;
    match args.command {
        TokenCommand::Create { name, scopes } => {
            let created = fitd::auth::create_token(&store, &name, &scopes)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", created.token);
            eprintln!(
                "created token {} ({}, scopes {}); it is shown only this once",
                created.row.id, created.row.name, created.row.scopes
            );
        }
        TokenCommand::List => {
            println!(
                "{:<36}  {:<12}  {:<26}  {:<20}  {:<20}  NAME",
                "ID", "PREFIX", "SCOPES", "CREATED", "REVOKED"
            );
            for t in fitd::store::tokens::list(&store).await? {
                println!(
                    "{:<36}  {:<12}  {:<26}  {:<20}  {:<20}  {}",
                    t.id,
                    t.prefix,
                    t.scopes,
                    t.created_at,
                    t.revoked_at.as_deref().unwrap_or("-"),
                    t.name
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let now = fitd::store::now_rfc3339();
            match fitd::store::tokens::revoke(&store, &id, &now).await {
                Ok(t) => eprintln!("revoked token {} ({})", t.id, t.name),
                Err(fitd::store::Error::NotFound(_)) => anyhow::bail!("no token has the id {id:?}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    store.pool.close().await;
    Ok(())
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
