//! `wasmkube up` and `wasmkube apiserver`: run until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::{auth, open_store, serve, ApiServer};

use crate::{kubeconfig, ServerArgs};

pub async fn run(args: ServerArgs, what: &str) -> anyhow::Result<()> {
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => kubeconfig::default_data_dir()?,
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    let store = open_store(&args.store, &dir).await?;
    let shutdown = CancellationToken::new();
    let server = ApiServer::start(store, Box::new(auth::InsecureAdmin), shutdown.clone())
        .await
        .context("preparing the store")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let kubeconfig = kubeconfig::write(&dir, &url)?;
    println!("{what}: apiserver listening on {url}");
    println!("data dir: {}", dir.display());
    println!("kubeconfig: {}", kubeconfig.display());
    println!("  export KUBECONFIG={}", kubeconfig.display());
    let server_task = tokio::spawn(serve(listener, Arc::clone(&server)));
    wait_for_signal().await?;
    tracing::info!("stopping");
    shutdown.cancel();
    server_task
        .await
        .context("server task")?
        .context("serving")?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
