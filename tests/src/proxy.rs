//! An in-process jalin-proxy started from a real configuration file in a temporary directory,
//! with helpers to write the YAML and to change the file the way operators do (atomic rename).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jalin_proxy::{ConfigSource, Proxy, ProxyHandle, ReloadEvent};

/// The `jalin-proxy` binary, built into the running test's target directory (a no-op when up to
/// date): this crate has no binary of its own, so `CARGO_BIN_EXE_*` does not name it. For tests
/// that need the real process (signals, stdout, exit codes).
pub fn binary() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "jalin-proxy", "--bin", "jalin-proxy"])
        .arg("--manifest-path")
        .arg(&manifest)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cargo build -p jalin-proxy failed"
    );
    // Tests run from <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("jalin-proxy"))
        .unwrap_or_default();
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// One listener in a generated configuration.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub direction: &'static str,
    /// Explicit mode's service.
    pub service: String,
    /// `detect`, `http1`, `http2` or `tcp`.
    pub protocol: &'static str,
}

impl ListenerSpec {
    /// An outbound explicit-mode listener on `127.0.0.1:0` with protocol detection.
    pub fn outbound(name: &str, service: &str) -> Self {
        Self {
            name: name.into(),
            direction: "outbound",
            service: service.into(),
            protocol: "detect",
        }
    }

    /// The same, inbound.
    pub fn inbound(name: &str, service: &str) -> Self {
        Self {
            direction: "inbound",
            ..Self::outbound(name, service)
        }
    }
}

/// One service in a generated configuration.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    /// `auto`, `http1` or `http2`.
    pub protocol: &'static str,
}

impl ServiceSpec {
    pub fn new(name: &str, endpoints: &[SocketAddr]) -> Self {
        Self {
            name: name.into(),
            endpoints: endpoints.to_vec(),
            protocol: "auto",
        }
    }
}

/// Renders a configuration file (admin and listeners on port 0).
pub fn config_yaml(listeners: &[ListenerSpec], services: &[ServiceSpec]) -> String {
    let mut y = String::from("admin:\n  address: 127.0.0.1:0\nlisteners:\n");
    for l in listeners {
        y.push_str(&format!(
            "  - name: {}\n    address: 127.0.0.1:0\n    direction: {}\n    service: {}\n    protocol: {}\n",
            l.name, l.direction, l.service, l.protocol
        ));
    }
    y.push_str("services:\n");
    for s in services {
        y.push_str(&format!(
            "  - name: {}\n    protocol: {}\n    endpoints:\n",
            s.name, s.protocol
        ));
        for e in &s.endpoints {
            y.push_str(&format!("      - address: {e}\n"));
        }
    }
    y
}

/// The configuration most traffic suites use: admin and one outbound listener `out` on port 0
/// in front of one HTTP/1.1 service `svc`. [`OutboundConfig::yaml`] renders
///
/// ```yaml
/// admin:
///   address: 127.0.0.1:0
/// listeners:
///   - name: out
///     address: 127.0.0.1:0
///     direction: outbound
///     service: <svc>
/// services:
///   - name: <svc>
///     protocol: http1
///     endpoints:
///       - address: <endpoint>          # + labels: { <key>: <subset> }   (subset_endpoints)
///     subsets:                         #                                 (subset_endpoints)
///       - name: <subset>
///         labels: { <key>: <subset> }
///     policy: <policy>                 #                                 (policy)
/// routes:                              #                                 (http_routes)
///   - meta: { name: <svc>, namespace: default }   # name, namespace: (route_meta)
///     hosts: [<svc>]
///     http:
///       <rules>
/// ```
///
/// The YAML snippets are passed as the test writes them, at any indentation: their common
/// indentation is replaced by the one their place needs, and blank lines are dropped.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    svc: String,
    endpoints: String,
    subsets: String,
    policy: String,
    route_meta: (String, String),
    rules: Option<String>,
}

impl OutboundConfig {
    /// Service `svc` with `endpoints`, no policy and no route table.
    pub fn new(svc: &str, endpoints: &[SocketAddr]) -> Self {
        Self {
            svc: svc.into(),
            endpoints: endpoints
                .iter()
                .map(|e| format!("      - address: {e}\n"))
                .collect(),
            subsets: String::new(),
            policy: String::new(),
            route_meta: (svc.into(), "default".into()),
            rules: None,
        }
    }

    /// Service `svc` with one endpoint per `(subset, address)`, labelled `{ key: subset }`, and
    /// one subset of that name selecting it.
    pub fn subset_endpoints(svc: &str, key: &str, subsets: &[(&str, SocketAddr)]) -> Self {
        let mut config = Self::new(svc, &[]);
        config.subsets.push_str("    subsets:\n");
        for (subset, addr) in subsets {
            config.endpoints.push_str(&format!(
                "      - address: {addr}\n        labels: {{ {key}: {subset} }}\n"
            ));
            config.subsets.push_str(&format!(
                "      - name: {subset}\n        labels: {{ {key}: {subset} }}\n"
            ));
        }
        config
    }

    /// The service's `policy`: a one-line (flow) value, or a block.
    pub fn policy(mut self, yaml: &str) -> Self {
        let block = reindent(yaml, 6);
        self.policy = match block.lines().count() {
            1 => format!("    policy: {}\n", block.trim()),
            _ => format!("    policy:\n{block}"),
        };
        self
    }

    /// A route table for `svc` whose `http` list is `rules`.
    pub fn http_routes(mut self, rules: &str) -> Self {
        self.rules = Some(reindent(rules, 6));
        self
    }

    /// The seed's emergency routing: `x-child-access-reason: emergency` goes to the service as
    /// priority class `emergency`, everything else as standard; `extra` (route-level YAML such
    /// as `retries: { attempts: 0 }`) is added to both routes.
    pub fn emergency_routes(self, extra: &str) -> Self {
        let svc = self.svc.clone();
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("\n  {extra}")
        };
        self.http_routes(&format!(
            "- name: emergency\n  matches:\n    - headers:\n        x-child-access-reason: {{ exact: emergency }}\n  destinations:\n    - destination: {{ host: {svc} }}\n      weight: 100{extra}\n  priority: emergency\n- destinations:\n    - destination: {{ host: {svc} }}\n      weight: 100{extra}\n"
        ))
    }

    /// The route table's `meta` (default: the service's name in `default`).
    pub fn route_meta(mut self, name: &str, namespace: &str) -> Self {
        self.route_meta = (name.into(), namespace.into());
        self
    }

    /// The configuration file.
    pub fn yaml(&self) -> String {
        let svc = &self.svc;
        let mut y = format!(
            "admin:\n  address: 127.0.0.1:0\nlisteners:\n  - name: out\n    address: 127.0.0.1:0\n    direction: outbound\n    service: {svc}\nservices:\n  - name: {svc}\n    protocol: http1\n    endpoints:\n{}{}{}",
            self.endpoints, self.subsets, self.policy
        );
        if let Some(rules) = &self.rules {
            let (name, namespace) = &self.route_meta;
            y.push_str(&format!(
                "routes:\n  - meta: {{ name: {name}, namespace: {namespace} }}\n    hosts: [{svc}]\n    http:\n{rules}"
            ));
        }
        y
    }
}

/// `yaml` without blank lines, its common indentation replaced by `indent` spaces.
fn reindent(yaml: &str, indent: usize) -> String {
    let lines: Vec<&str> = yaml.lines().filter(|l| !l.trim().is_empty()).collect();
    let common = lines
        .iter()
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| format!("{:indent$}{}\n", "", &l[common..]))
        .collect()
}

/// A proxy running in this process from `dir/proxy.yaml`.
#[derive(Debug)]
pub struct TestProxy {
    pub handle: ProxyHandle,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestProxy {
    /// Writes `yaml` and starts the proxy on it.
    pub async fn start(yaml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, yaml)?;
        let handle = Proxy::start(ConfigSource::File(path.clone())).await?;
        Ok(Self {
            handle,
            path,
            _dir: dir,
        })
    }

    /// The bound address of listener `name`.
    #[allow(clippy::panic)] // Test support: asking for a listener the test did not configure is a test bug.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.handle
            .listener_addr(name)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    /// The admin server's address.
    pub fn admin(&self) -> SocketAddr {
        self.handle.admin_addr()
    }

    /// Replaces the file atomically (write a sibling, rename over), as editors and ConfigMap
    /// updates do, and waits for the watcher's reload outcome.
    pub async fn rewrite(&self, yaml: &str) -> anyhow::Result<ReloadEvent> {
        let mut events = self.handle.reload_events();
        events.borrow_and_update();
        let tmp = self.path.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &self.path)?;
        // Guard against a hang only; the reload itself takes milliseconds.
        tokio::time::timeout(Duration::from_secs(30), events.changed()).await??;
        let event = events.borrow().clone();
        event.ok_or_else(|| anyhow::anyhow!("reload event missing"))
    }
}
