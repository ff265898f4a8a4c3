use capex_server::{Application, Config, telemetry};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init_logging(config.log_format);
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr()?, "capex-server listening");
    println!("capex-server listening on http://{}", app.local_addr()?);
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("capex-server stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests drain before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
