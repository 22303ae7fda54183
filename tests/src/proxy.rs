//! An in-process jalin-proxy started from a real configuration file in a temporary directory,
//! with helpers to write the YAML and to change the file the way operators do (atomic rename).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jalin_proxy::{ConfigSource, Proxy, ProxyHandle, ReloadEvent};

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
