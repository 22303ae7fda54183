//! The demo's life: start everything in order, refresh the summary once a second until the
//! duration runs out or Ctrl-C / SIGTERM arrives, then print the final summary and stop every
//! child process.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use jalin_ca::cli::{CaCommand, DEV_LABEL, InitDevArgs, IssueArgs};
use tokio::signal::unix::{SignalKind, signal};

use super::apps::Apps;
use super::example::{self, Behaviour, CLIENTS, INSTANCES};
use super::logs::LogTail;
use super::mesh::{self, Capabilities, ProxyAddrs};
use super::proxies::{self, Proxies};
use super::scrape::{http_get, parse_metrics};
use super::summary::{Reading, Snapshot, verdict_report};
use super::{DemoArgs, DemoError, traffic};
use crate::server::mesh::ca_from_dir;
use crate::server::{Control, ControlConfig};

/// Istio's root namespace: policies there apply mesh-wide.
const ROOT_NAMESPACE: &str = "istio-system";
/// The SPIFFE trust domain of the demo mesh (Istio's default, which the seed principals use).
const TRUST_DOMAIN: &str = "cluster.local";
/// Workload certificate lifetime: the demo is short-lived.
const WORKLOAD_TTL: Duration = Duration::from_secs(3600);
/// The summary refresh period.
const REFRESH: Duration = Duration::from_secs(1);

pub(super) async fn run(args: &DemoArgs) -> Result<bool, DemoError> {
    // Installed before anything starts, once: a Ctrl-C or SIGTERM during start-up or while the
    // summary is read is kept for the loop below, which then stops every child cleanly.
    let mut term = signal(SignalKind::terminate()).map_err(DemoError::Runtime)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DemoError::Runtime)?;
    let tui = !args.no_tui && std::io::stdout().is_terminal();
    let bin = proxies::locate()?;
    let dir = tempfile::Builder::new()
        .prefix("jalin-demo-")
        .tempdir()
        .map_err(DemoError::io(&std::env::temp_dir()))?;
    let root = dir.path().to_path_buf();
    say(&format!("jalin demo: working directory {}", root.display()));

    // 1. The development CA and one workload certificate per sidecar.
    let ca_dir = root.join("ca");
    dev_ca(&ca_dir)?;
    for (name, ns, sa) in identities() {
        issue(&ca_dir, name, ns, sa)?;
    }
    say(&format!(
        "  CA        development CA ({DEV_LABEL}) in {}, {} workload certificates (spiffe://{TRUST_DOMAIN}/ns/<ns>/sa/<sa>)",
        ca_dir.display(),
        identities().len()
    ));

    // 2. The demo applications.
    let apps = Apps::start(INSTANCES).await?;

    // 3. Free ports, the example directory with them, and its import.
    let mut ports = FreePorts::default();
    let mut addrs: BTreeMap<&str, ProxyAddrs> = BTreeMap::new();
    let mut example_ports = BTreeMap::new();
    for i in INSTANCES {
        let listen = ports.take()?;
        example_ports.insert(i.example_port, listen.port());
        let app = apps
            .get(i.name)
            .map(|a| a.addr)
            .ok_or_else(|| DemoError::Plan(format!("no app for {}", i.name)))?;
        addrs.insert(
            i.name,
            ProxyAddrs {
                admin: ports.take()?,
                inbound: Some((listen, app)),
                outbound: BTreeMap::new(),
            },
        );
    }
    for c in CLIENTS {
        let mut outbound = BTreeMap::new();
        for host in c.calls {
            outbound.insert((*host).to_owned(), ports.take()?);
        }
        addrs.insert(
            c.name,
            ProxyAddrs {
                admin: ports.take()?,
                inbound: None,
                outbound,
            },
        );
    }
    let config_dir = root.join("config");
    example::materialise(&config_dir, &example_ports)?;
    let imported = mesh::import(&config_dir)?;
    let caps = Capabilities::ALL;
    let control = start_control(&config_dir, &ca_dir).await?;
    let version = control.progress().borrow().accepted_version;
    say(&format!(
        "  control   jalin control (in-process) reads the bundled example ({} files): config version {version} accepted; xDS https://{}, CA https://{}, health http://{}/ready",
        example::FILES.len(),
        control.xds_addr,
        control
            .ca_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into()),
        control.health_addr,
    ));
    say(&format!(
        "  sidecars  bootstrap files name the workload identity and the control plane; clusters, routes and policies come over xDS ({} resources imported, {} warnings, {} unsupported fields)",
        imported.resources, imported.warnings, imported.unsupported
    ));
    let cp = mesh::ControlPlane {
        address: control.xds_addr.to_string(),
        identity: mesh::Identity::spiffe_id(
            TRUST_DOMAIN,
            jalin_ca::server::CA_NAMESPACE,
            jalin_ca::server::CA_SERVICE_ACCOUNT,
        ),
        server_name: CONTROL_DNS_NAME.to_owned(),
    };

    // 4. The sidecars. The ports are released just before the proxies bind them.
    let proxy_dir = root.join("proxies");
    std::fs::create_dir_all(&proxy_dir).map_err(DemoError::io(&proxy_dir))?;
    let mut files = Vec::new();
    let identity = |name: &str, ns: &str, sa: &str, labels| mesh::Identity {
        trust_domain: TRUST_DOMAIN.to_owned(),
        namespace: ns.to_owned(),
        service_account: sa.to_owned(),
        labels,
        cert: ca_dir.join(format!("{name}.pem")),
        key: ca_dir.join(format!("{name}-key.pem")),
        bundle: ca_dir.join("root.pem"),
    };
    for i in INSTANCES {
        let a = &addrs[i.name];
        let port = a.inbound.map(|(l, _)| l.port()).unwrap_or(0);
        let labels = mesh::workload_labels(&imported.native, port);
        let id = identity(i.name, i.namespace, i.service_account, labels);
        let config = mesh::server_config(i, a, &id, &cp)?;
        files.push((i.name, config, a.admin));
    }
    for c in CLIENTS {
        let a = &addrs[c.name];
        let labels = BTreeMap::from([("app".to_owned(), c.name.to_owned())]);
        let id = identity(c.name, c.namespace, c.service_account, labels);
        let config = mesh::client_config(c, a, &id, &cp, &imported.native)?;
        files.push((c.name, config, a.admin));
    }
    drop(ports);
    let mut procs = Proxies::default();
    let started = start_proxies(&mut procs, &bin, &proxy_dir, &files).await;
    if let Err(e) = started {
        procs.stop().await;
        control.shutdown().await;
        return Err(e);
    }
    for p in &procs.list {
        say(&format!(
            "  sidecar   {:<26} pid {:<7} admin http://{}  log {}",
            p.name,
            p.pid,
            p.admin,
            p.log.display()
        ));
    }
    if caps.mtls.is_none() {
        say(
            "  mTLS      every sidecar presents its workload certificate; inbound mode per the PeerAuthentication policies",
        );
    }
    if caps.authz.is_none() {
        say(&format!(
            "  authz     {} AuthorizationPolicies from the example enforced by the server sidecars",
            imported.native.authorization_policies.len()
        ));
    }
    for reason in [caps.authz, caps.routes, caps.outlier, caps.mtls]
        .into_iter()
        .flatten()
    {
        say(&format!("  note      {reason}"));
    }

    // 5. Traffic, and the summary until the end.
    let (scenarios, traffic_tasks) = traffic::start(|client, host| {
        addrs
            .get(client)
            .and_then(|a| a.outbound.get(host).copied())
    });
    let failing_proxies: Vec<&str> = INSTANCES
        .iter()
        .filter(|i| matches!(i.behaviour, Behaviour::FailAfter(_)))
        .map(|i| i.name)
        .collect();
    let header = format!(
        "jalin demo · dev CA ({DEV_LABEL}) · {} sidecars · {} demo apps",
        procs.list.len(),
        apps.apps.len()
    );
    let start = Instant::now();
    let duration_s = args.duration.map(|d| d.as_secs());
    let mut interrupted = false;
    let mut died = Vec::new();
    let mut tails: Vec<LogTail> = procs
        .list
        .iter()
        .map(|p| LogTail::new(p.log.clone()))
        .collect();
    let mut denial_log = BTreeMap::new();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let deadline_hit = args.duration.is_some_and(|d| start.elapsed() >= d);
        if deadline_hit {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = interrupt.recv() => { interrupted = true; break; }
            _ = term.recv() => { interrupted = true; break; }
        }
        died = procs.exited();
        if !died.is_empty() {
            break;
        }
        let readings = scrape_all(&procs).await;
        for t in &mut tails {
            t.read_denials(&mut denial_log);
        }
        let snap = Snapshot {
            elapsed_s: start.elapsed().as_secs(),
            duration_s,
            readings: &readings,
            scenarios: &scenarios,
            apps: &apps,
            caps,
            failing_proxies: &failing_proxies,
            header: &header,
            denial_log: &denial_log,
        };
        if tui {
            print!("\x1b[H\x1b[2J{}", snap.render());
        } else {
            println!("{}", snap.line());
        }
        let _ = std::io::stdout().flush();
    }

    // 6. Stop the traffic, read the proxies one last time, stop them and the control plane.
    drop(traffic_tasks);
    let readings = scrape_all(&procs).await;
    procs.stop().await;
    control.shutdown().await;
    for t in &mut tails {
        t.read_denials(&mut denial_log);
    }
    let snap = Snapshot {
        elapsed_s: start.elapsed().as_secs(),
        duration_s,
        readings: &readings,
        scenarios: &scenarios,
        apps: &apps,
        caps,
        failing_proxies: &failing_proxies,
        header: &header,
        denial_log: &denial_log,
    };
    let (verdicts, pass) = verdict_report(&snap.verdicts());
    if tui {
        print!("\x1b[H\x1b[2J");
    }
    println!("\nFINAL SUMMARY\n{}\n{verdicts}", snap.render());
    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    if !died.is_empty() {
        println!("stopped early: proxy exited: {}", died.join(", "));
        return Ok(false);
    }
    if interrupted {
        println!("stopped by signal; all sidecars stopped");
        return Ok(true);
    }
    if pass {
        println!("every kind of traffic in this build was seen; all sidecars stopped");
    } else {
        println!("some kind of traffic was NOT SEEN (listed above); all sidecars stopped");
    }
    Ok(pass)
}

fn say(line: &str) {
    println!("{line}");
}

/// Every identity the demo issues a certificate for: (file name, namespace, service account).
fn identities() -> Vec<(&'static str, &'static str, &'static str)> {
    INSTANCES
        .iter()
        .map(|i| (i.name, i.namespace, i.service_account))
        .chain(
            CLIENTS
                .iter()
                .map(|c| (c.name, c.namespace, c.service_account)),
        )
        .collect()
}

fn dev_ca(dir: &Path) -> Result<(), DemoError> {
    let mut out = Vec::new();
    CaCommand::InitDev(InitDevArgs {
        out_dir: dir.to_path_buf(),
        trust_domain: TRUST_DOMAIN.to_owned(),
        root_validity: Duration::from_secs(86_400),
        intermediate_validity: Duration::from_secs(86_400),
        force: false,
    })
    .run_to(&mut out)
    .map_err(|e| DemoError::Ca(e.to_string()))
}

fn issue(ca: &Path, name: &str, namespace: &str, sa: &str) -> Result<(), DemoError> {
    let mut out = Vec::new();
    CaCommand::Issue(IssueArgs {
        chain: ca.join("intermediate.pem"),
        roots: ca.join("root.pem"),
        key: ca.join("intermediate-key.pem").display().to_string(),
        trust_domain: TRUST_DOMAIN.to_owned(),
        namespace: namespace.to_owned(),
        service_account: sa.to_owned(),
        ttl: WORKLOAD_TTL,
        max_ttl: WORKLOAD_TTL,
        out_cert: ca.join(format!("{name}.pem")),
        out_key: ca.join(format!("{name}-key.pem")),
        audit_log: Some(ca.join("audit.jsonl")),
    })
    .run_to(&mut out)
    .map_err(|e| DemoError::Ca(format!("{namespace}/{sa}: {e}")))
}

/// The DNS name in the control plane's serving certificate that sidecars send as SNI (inside
/// the development CA's name constraints, which permit the trust domain only).
const CONTROL_DNS_NAME: &str = "jalin-control.jalin-system.svc.cluster.local";
/// How long the control plane may take to push its first configuration.
const CONTROL_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `jalin control` in this process: the example directory as its file source, the demo's CA
/// (issuing over gRPC), every listener on a free port of 127.0.0.1.
async fn start_control(config_dir: &Path, ca_dir: &Path) -> Result<Control, DemoError> {
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let control = Control::start(ControlConfig {
        config_dir: Some(config_dir.to_path_buf()),
        kube_client: None,
        xds_listen: any,
        ca_listen: Some(any),
        health_listen: any,
        ca: Some(ca_from_dir(ca_dir, TRUST_DOMAIN)),
        insecure_xds: false,
        root_namespace: ROOT_NAMESPACE.to_owned(),
        cluster_domain: TRUST_DOMAIN.to_owned(),
        dns_names: vec![CONTROL_DNS_NAME.to_owned()],
        join_tokens: None,
        webhook: None,
    })
    .await
    .map_err(|e| DemoError::Control(e.to_string()))?;
    if tokio::time::timeout(CONTROL_READY_TIMEOUT, control.ready())
        .await
        .is_err()
    {
        control.shutdown().await;
        return Err(DemoError::Control(format!(
            "no configuration pushed within {}s",
            CONTROL_READY_TIMEOUT.as_secs()
        )));
    }
    Ok(control)
}

async fn start_proxies(
    procs: &mut Proxies,
    bin: &Path,
    dir: &Path,
    files: &[(&str, String, SocketAddr)],
) -> Result<(), DemoError> {
    for (name, config, admin) in files {
        procs.spawn(bin, dir, name, config, *admin)?;
    }
    procs.wait_ready().await
}

async fn scrape_all(procs: &Proxies) -> Vec<Reading> {
    let reads = procs.list.iter().map(|p| async move {
        match http_get(p.admin, "/metrics").await {
            Ok((200, text)) => Reading::from_samples(&p.name, &parse_metrics(&text)),
            _ => Reading {
                name: p.name.clone(),
                up: false,
                ..Reading::default()
            },
        }
    });
    futures::future::join_all(reads).await
}

/// Free ports on 127.0.0.1, held (bound) until dropped so no two are the same.
#[derive(Debug, Default)]
struct FreePorts(Vec<TcpListener>);

impl FreePorts {
    fn take(&mut self) -> Result<SocketAddr, DemoError> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| DemoError::Bind(e.to_string()))?;
        let addr = l.local_addr().map_err(|e| DemoError::Bind(e.to_string()))?;
        self.0.push(l);
        Ok(addr)
    }
}
