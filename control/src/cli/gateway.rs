//! `jalin gateway bootstrap`: an Istio Gateway (and the VirtualServices bound to it) in, the
//! `jalin-proxy --config` file of the bare-metal proxy that runs it out.
//!
//! The file has one listener per server port ([`crate::istio::gateway_servers`]), the workload
//! identity from certificate files (`jalin ca issue`), and the control plane, which sends the
//! gateway its route tables, clusters and policies: the node announces the Gateway's `selector`
//! labels, which is how the control plane recognises the proxy as this Gateway's.
//! Exit codes as the policy commands: 0 written, 1 a finding stops it, 2 I/O.

use std::path::PathBuf;
use std::process::ExitCode;

use jalin_ca::server::{CA_NAMESPACE, CA_SERVICE_ACCOUNT};

use super::policy::render;
use crate::demo::mesh::{self, ControlPlane, Identity};
use crate::istio::gateway_servers::{self, GatewayListeners};
use crate::istio::{Finding, Loaded, Resource, Severity, Spec, convert, load_paths};

/// The control plane's ADS address when `--control-plane` is not given.
pub const DEFAULT_CONTROL_PLANE: &str = "jalin-control.jalin-system.svc:15010";

/// `jalin gateway ...`.
#[derive(Debug, clap::Subcommand)]
pub enum GatewayCommand {
    /// Print the jalin-proxy configuration of the proxy that runs an Istio Gateway.
    Bootstrap(BootstrapArgs),
}

/// `jalin gateway bootstrap` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// The Gateway, `namespace/name`.
    #[arg(long)]
    pub gateway: String,
    /// Files or directories of Istio YAML holding the Gateway and its VirtualServices.
    #[arg(short = 'f', long = "filename", required = true)]
    pub paths: Vec<PathBuf>,
    /// The control plane's xDS address, `host:port`.
    #[arg(long, default_value = DEFAULT_CONTROL_PLANE)]
    pub control_plane: String,
    /// The control plane's SPIFFE ID (default: the CA's, `spiffe://<td>/ns/jalin-system/sa/jalin-ca`).
    #[arg(long)]
    pub control_plane_id: Option<String>,
    /// Also serve HTTP/3 (QUIC) on the HTTPS ports.
    #[arg(long)]
    pub http3: bool,
    /// The mesh's trust domain.
    #[arg(long, default_value = crate::server::mesh::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// The gateway workload's namespace (default: the Gateway's).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The gateway workload's service account (default: the Gateway's name); with the namespace,
    /// it must be the SPIFFE ID of `--cert`, which the control plane checks.
    #[arg(long)]
    pub service_account: Option<String>,
    /// The workload certificate chain (PEM), as `jalin ca issue` writes it.
    #[arg(long, default_value = "/etc/jalin/certs/cert.pem")]
    pub cert: PathBuf,
    /// The workload private key (PEM).
    #[arg(long, default_value = "/etc/jalin/certs/key.pem")]
    pub key: PathBuf,
    /// The mesh's root certificates (PEM).
    #[arg(long, default_value = "/etc/jalin/certs/bundle.pem")]
    pub trust_bundle: PathBuf,
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: std::net::SocketAddr,
}

/// Run `jalin gateway ...`.
pub fn run(cmd: GatewayCommand) -> ExitCode {
    match cmd {
        GatewayCommand::Bootstrap(args) => {
            let loaded = load_paths(&args.paths);
            match bootstrap(&args, &loaded) {
                Ok(b) => {
                    for n in &b.notes {
                        eprintln!("{}", render(n));
                    }
                    for line in &b.served {
                        eprintln!("{line}");
                    }
                    print!("{}", b.yaml);
                    ExitCode::SUCCESS
                }
                Err(findings) => {
                    for f in &findings {
                        eprintln!("{}", render(f));
                    }
                    eprintln!("jalin gateway bootstrap: not rendered; fix the errors above");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// A rendered bootstrap.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The `jalin-proxy --config` YAML.
    pub yaml: String,
    /// Warnings: hosts dropped, Gateways not found, httpsRedirect served by route.
    pub notes: Vec<Finding>,
    /// What the gateway serves: `gateway ns/name: serves VirtualService ns/name for hosts`.
    pub served: Vec<String>,
}

/// The proxy file for `args.gateway` among `loaded`, with notes (what the gateway gets, what
/// the control plane serves for it); or the findings that stop it.
pub fn bootstrap(args: &BootstrapArgs, loaded: &Loaded) -> Result<Bootstrap, Vec<Finding>> {
    let errors: Vec<Finding> = loaded.errors().cloned().collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let gateway = find(loaded, &args.gateway)?;
    let GatewayListeners {
        listeners,
        mut notes,
    } = gateway_servers::listeners(gateway, args.http3)?;
    let Spec::Gateway(spec) = &gateway.spec else {
        return Err(Vec::new());
    };
    let mut findings = Vec::new(); // Load-time findings are reported by `jalin validate`.
    let native = convert::convert_only(&loaded.resources, &mut findings);
    let (served, dropped) = served_routes(&native, gateway);
    notes.extend(dropped);
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| gateway.namespace.clone());
    let service_account = args
        .service_account
        .clone()
        .unwrap_or_else(|| gateway.name.clone());
    let id = Identity {
        trust_domain: args.trust_domain.clone(),
        namespace,
        service_account,
        labels: spec.selector.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        bundle: args.trust_bundle.clone(),
    };
    let host = args
        .control_plane
        .rsplit_once(':')
        .map_or(args.control_plane.as_str(), |(h, _)| h);
    let cp = ControlPlane {
        address: args.control_plane.clone(),
        identity: args.control_plane_id.clone().unwrap_or_else(|| {
            Identity::spiffe_id(&args.trust_domain, CA_NAMESPACE, CA_SERVICE_ACCOUNT)
        }),
        server_name: host.to_owned(),
    };
    let node = format!("gateway~{}~{}", gateway.namespace, gateway.name);
    mesh::render(&node, args.admin, listeners, Vec::new(), &id, &cp)
        .map(|yaml| Bootstrap {
            yaml,
            notes,
            served,
        })
        .map_err(|e| vec![gateway.finding(Severity::Error, "", e.to_string())])
}

fn find<'a>(loaded: &'a Loaded, key: &str) -> Result<&'a Resource, Vec<Finding>> {
    let gateways: Vec<&Resource> = loaded
        .resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::Gateway(_)))
        .collect();
    gateways
        .iter()
        .find(|r| format!("{}/{}", r.namespace, r.name) == key)
        .copied()
        .ok_or_else(|| {
            let known: Vec<String> = gateways
                .iter()
                .map(|r| format!("{}/{} ({}:{})", r.namespace, r.name, r.file, r.line))
                .collect();
            vec![Finding {
                severity: Severity::Error,
                file: "--gateway".to_owned(),
                line: 0,
                resource: None,
                path: String::new(),
                message: format!(
                    "no Gateway `{key}` in the {} file(s) read; expected `namespace/name` of one of: {}",
                    loaded.files.len(),
                    if known.is_empty() { "none (add the Gateway's YAML to -f)".to_owned() } else { known.join(", ") }
                ),
                code: None,
            }]
        })
}

/// What the Gateway gets: one line per VirtualService bound to it, with its hosts there; and
/// the warnings about it (hosts dropped, VirtualServices naming it that it does not serve), or
/// a warning that no VirtualService is bound to it.
fn served_routes(
    native: &crate::istio::convert::NativeConfig,
    gateway: &Resource,
) -> (Vec<String>, Vec<Finding>) {
    let key = format!("{}/{}", gateway.namespace, gateway.name);
    let bindings = crate::istio::gateway::bind(native, &crate::lint::fqdn);
    let lines: Vec<String> = bindings
        .bindings
        .iter()
        .filter(|b| b.gateway == key)
        .map(|b| {
            format!(
                "gateway {key}: serves VirtualService {} for {}",
                b.route,
                b.hosts.join(", ")
            )
        })
        .collect();
    let named = format!("Gateway `{key}`");
    let mut notes: Vec<Finding> = bindings
        .findings
        .into_iter()
        .filter(|f| f.message.contains(&named))
        .collect();
    if lines.is_empty() {
        notes.push(gateway.finding(Severity::Warning, "spec.servers", format!("no VirtualService names this Gateway in `spec.gateways` (as `{key}`, or by its short name from namespace `{}`), so it answers every request 404; bind one", gateway.namespace)));
    }
    (lines, notes)
}
