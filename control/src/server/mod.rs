//! `jalin control`: the control plane. Configuration comes from a watched directory and/or the
//! Kubernetes API ([`source`]), lands in one [`store`] (a bad update is rejected whole), is
//! translated into xDS resources ([`translate`]) and served per proxy ([`scope`]) by the xDS
//! server, next to the CA issuance service and the health port ([`serve`], [`health`]).

pub mod admit;
pub mod health;
pub mod listeners;
pub mod mesh;
pub mod scope;
pub mod serve;
pub mod source;
pub mod store;
pub mod token_review;
pub mod translate;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

pub use serve::{Control, ControlConfig, ControlError};

/// Arguments of `jalin control`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Directory of Istio YAML to watch (re-imported whole on change).
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// Read Istio resources, Services, EndpointSlices and Pods from the Kubernetes API.
    #[arg(long)]
    pub kubernetes: bool,
    /// xDS (gRPC, mTLS) listen address.
    #[arg(long, default_value = "0.0.0.0:15010")]
    pub xds_listen: SocketAddr,
    /// CA issuance service (gRPC, TLS) listen address.
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub ca_listen: SocketAddr,
    /// Health port: /ready, /live, /metrics, /debug/config.
    #[arg(long, default_value = "0.0.0.0:15014")]
    pub health_listen: SocketAddr,
    /// Sidecar-injection webhook (HTTPS, POST /inject) listen address; served with
    /// --kubernetes, with a certificate from the mesh CA for the control plane's DNS names.
    #[arg(long, default_value = "0.0.0.0:15017")]
    pub webhook_listen: SocketAddr,
    /// CA directory as written by `jalin ca init-dev` (root.pem, intermediate.pem,
    /// intermediate-key.pem).
    #[arg(long, conflicts_with = "mesh_config")]
    pub ca_dir: Option<PathBuf>,
    /// Mesh configuration file (trustDomain, rootNamespace, controlPlane.dnsNames, ca.*).
    #[arg(long)]
    pub mesh_config: Option<PathBuf>,
    /// SPIFFE trust domain (overrides the mesh config).
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Istio root namespace (overrides the mesh config).
    #[arg(long)]
    pub root_namespace: Option<String>,
    /// Kubernetes cluster DNS domain.
    #[arg(long, default_value = crate::k8s::registry::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Join-token store file for bare-metal proxies (`jalin ca token create`).
    #[arg(long)]
    pub join_tokens: Option<PathBuf>,
    /// Serve xDS in plaintext. For tests and demos only: proxies are not authenticated, and a
    /// proxy is scoped by the namespace and service account its node metadata claims (over mTLS
    /// they come from its certificate, and a stream whose metadata disagrees is refused).
    #[arg(long)]
    pub insecure_xds: bool,
}

/// Runs `jalin control` until SIGTERM or Ctrl-C.
pub fn run(args: ControlArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_async(args: ControlArgs) -> anyhow::Result<()> {
    let config = mesh::resolve(&args).await?;
    let control = Control::start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
    }
    control.shutdown().await;
    Ok(())
}
