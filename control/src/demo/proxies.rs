//! The demo's `jalin-proxy` child processes: found next to the running `jalin` binary, each
//! started with its configuration file and its log in the demo's directory, waited on until
//! its admin `/ready` answers, and killed (and reaped) when the demo stops or is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::DemoError;
use super::scrape::http_get;

/// The proxy binary's file name.
pub const PROXY_BIN: &str = "jalin-proxy";
/// Overrides where the proxy binary is looked for (a path to the binary).
pub const PROXY_BIN_ENV: &str = "JALIN_PROXY_BIN";
/// How long a proxy may take to answer `/ready`: a debug build on a loaded 2-core machine
/// starts in well under a second; past this something is wrong (a port taken, a bad file).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Between two `/ready` probes while a proxy starts.
const READY_POLL: Duration = Duration::from_millis(50);

/// Finds `jalin-proxy`: `$JALIN_PROXY_BIN`, else next to the current executable (cargo puts
/// both binaries in `target/<profile>/`).
pub fn locate() -> Result<PathBuf, DemoError> {
    if let Some(p) = std::env::var_os(PROXY_BIN_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(DemoError::ProxyMissing {
                looked: p,
                why: format!("${PROXY_BIN_ENV} names no file"),
            })
        };
    }
    let exe = std::env::current_exe().map_err(|e| DemoError::ProxyMissing {
        looked: PathBuf::from(PROXY_BIN),
        why: format!("the current executable's path is unknown: {e}"),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidate = dir.join(PROXY_BIN);
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(DemoError::ProxyMissing {
            looked: candidate,
            why: "not found next to the jalin binary".to_owned(),
        })
    }
}

/// One running proxy.
#[derive(Debug)]
pub struct ProxyProcess {
    pub name: String,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pub pid: u32,
    child: Child,
}

/// Every proxy; dropping it kills them (tokio's `kill_on_drop`), [`Proxies::stop`] also reaps.
#[derive(Debug, Default)]
pub struct Proxies {
    pub list: Vec<ProxyProcess>,
}

impl Proxies {
    /// Starts `bin --config <dir>/<name>.yaml --workers 1 --log-json`, logging to
    /// `<dir>/<name>.log`.
    pub fn spawn(
        &mut self,
        bin: &Path,
        dir: &Path,
        name: &str,
        config: &str,
        admin: SocketAddr,
    ) -> Result<(), DemoError> {
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config).map_err(DemoError::io(&config_path))?;
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(DemoError::io(&log))?;
        let err = out.try_clone().map_err(DemoError::io(&log))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .args(["--workers", "1", "--log-json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            // Its own process group: a terminal's Ctrl-C reaches the demo only, which then
            // stops every sidecar itself (and reports their numbers first).
            .process_group(0)
            .spawn()
            .map_err(|e| DemoError::ProxyStart {
                name: name.to_owned(),
                why: format!("{}: {e}", bin.display()),
                log: log.clone(),
            })?;
        let pid = child.id().unwrap_or(0);
        self.list.push(ProxyProcess {
            name: name.to_owned(),
            admin,
            log,
            pid,
            child,
        });
        Ok(())
    }

    /// Waits until every proxy's `/ready` answers 200; a proxy that exits or stays unready
    /// past [`READY_TIMEOUT`] is an error naming its log.
    pub async fn wait_ready(&mut self) -> Result<(), DemoError> {
        for p in &mut self.list {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(DemoError::ProxyStart {
                        name: p.name.clone(),
                        why: format!("exited with {status} while starting"),
                        log: p.log.clone(),
                    });
                }
                if let Ok((200, _)) = http_get(p.admin, "/ready").await {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(DemoError::ProxyStart {
                        name: p.name.clone(),
                        why: format!(
                            "admin http://{}/ready did not answer 200 within {}s",
                            p.admin,
                            READY_TIMEOUT.as_secs()
                        ),
                        log: p.log.clone(),
                    });
                }
                tokio::time::sleep(READY_POLL).await;
            }
        }
        Ok(())
    }

    /// Names of proxies that have exited on their own.
    pub fn exited(&mut self) -> Vec<String> {
        self.list
            .iter_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} ({status}, log {})", p.name, p.log.display())),
                _ => None,
            })
            .collect()
    }

    /// Kills every proxy and waits for each to be reaped, so none survives the demo.
    pub async fn stop(&mut self) {
        for p in &mut self.list {
            let _ = p.child.start_kill();
        }
        for p in &mut self.list {
            let _ = p.child.wait().await;
        }
    }
}
