//! The bundled example directory (`control/examples/demo`), compiled into the binary so the
//! demo runs from any directory, and the table of demo workloads that the example describes.
//!
//! Invariant: every server instance's `example_port` appears exactly once in the ServiceEntry
//! file, as the value of a `ports` entry; [`materialise`] replaces it with the instance's
//! free port. The unit tests hold the table and the files to that.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::DemoError;

/// The example files, by name, as shipped in `control/examples/demo`.
pub const FILES: &[(&str, &str)] = &[
    (
        "demo-00-services.yaml",
        include_str!("../../examples/demo/demo-00-services.yaml"),
    ),
    (
        "policies-05-peerauthentication-child-data-mtls-strict.yaml",
        include_str!(
            "../../examples/demo/policies-05-peerauthentication-child-data-mtls-strict.yaml"
        ),
    ),
    (
        "policies-06-peerauthentication-emergency-services-mtls.yaml",
        include_str!(
            "../../examples/demo/policies-06-peerauthentication-emergency-services-mtls.yaml"
        ),
    ),
    (
        "policies-07-peerauthentication-government-services-mtls.yaml",
        include_str!(
            "../../examples/demo/policies-07-peerauthentication-government-services-mtls.yaml"
        ),
    ),
    (
        "policies-10-authorizationpolicy-child-profile-access-policy.yaml",
        include_str!(
            "../../examples/demo/policies-10-authorizationpolicy-child-profile-access-policy.yaml"
        ),
    ),
    (
        "policies-11-authorizationpolicy-health-records-access-policy.yaml",
        include_str!(
            "../../examples/demo/policies-11-authorizationpolicy-health-records-access-policy.yaml"
        ),
    ),
    (
        "policies-12-authorizationpolicy-government-service-access-policy.yaml",
        include_str!(
            "../../examples/demo/policies-12-authorizationpolicy-government-service-access-policy.yaml"
        ),
    ),
    (
        "policies-15-authorizationpolicy-emergency-access-policy.yaml",
        include_str!(
            "../../examples/demo/policies-15-authorizationpolicy-emergency-access-policy.yaml"
        ),
    ),
    (
        "policies-16-authorizationpolicy-emergency-override-policy.yaml",
        include_str!(
            "../../examples/demo/policies-16-authorizationpolicy-emergency-override-policy.yaml"
        ),
    ),
    (
        "policies-17-virtualservice-child-profile-service-routing.yaml",
        include_str!(
            "../../examples/demo/policies-17-virtualservice-child-profile-service-routing.yaml"
        ),
    ),
    (
        "policies-18-destinationrule-child-profile-service-destination.yaml",
        include_str!(
            "../../examples/demo/policies-18-destinationrule-child-profile-service-destination.yaml"
        ),
    ),
    (
        "policies-19-virtualservice-government-services-routing.yaml",
        include_str!(
            "../../examples/demo/policies-19-virtualservice-government-services-routing.yaml"
        ),
    ),
    (
        "policies-22-destinationrule-child-services-fault-tolerance.yaml",
        include_str!(
            "../../examples/demo/policies-22-destinationrule-child-services-fault-tolerance.yaml"
        ),
    ),
    (
        "policies-23-destinationrule-emergency-services-fault-tolerance.yaml",
        include_str!(
            "../../examples/demo/policies-23-destinationrule-emergency-services-fault-tolerance.yaml"
        ),
    ),
    (
        "policies-24-telemetry-child-services-telemetry.yaml",
        include_str!("../../examples/demo/policies-24-telemetry-child-services-telemetry.yaml"),
    ),
    (
        "policies-25-telemetry-emergency-services-telemetry.yaml",
        include_str!("../../examples/demo/policies-25-telemetry-emergency-services-telemetry.yaml"),
    ),
    (
        "policies-27-telemetry-child-services-tracing.yaml",
        include_str!("../../examples/demo/policies-27-telemetry-child-services-tracing.yaml"),
    ),
    (
        "policies-33-destinationrule-emergency-circuit-breaker-override.yaml",
        include_str!(
            "../../examples/demo/policies-33-destinationrule-emergency-circuit-breaker-override.yaml"
        ),
    ),
    (
        "policies-34-destinationrule-emergency-failover-policy.yaml",
        include_str!(
            "../../examples/demo/policies-34-destinationrule-emergency-failover-policy.yaml"
        ),
    ),
];

/// The file holding the ServiceEntries whose endpoint ports are replaced.
pub const SERVICES_FILE: &str = "demo-00-services.yaml";

/// What a demo application does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers 200 with a small JSON body naming the instance.
    Echo,
    /// Answers like [`Behaviour::Echo`] for the given time after start, then 503 to everything.
    FailAfter(Duration),
}

/// One server instance: an application and its sidecar (an inbound listener).
#[derive(Debug, Clone, Copy)]
pub struct Instance {
    /// Proxy and application name (also the file names in the demo's directory).
    pub name: &'static str,
    pub namespace: &'static str,
    pub service_account: &'static str,
    /// The service host the instance serves (the ServiceEntry host).
    pub host: &'static str,
    /// The port written in the example file, replaced by a free port at start.
    pub example_port: u16,
    /// The instance's `priority` label (the DestinationRule subset it belongs to), if any.
    pub priority: Option<&'static str>,
    pub behaviour: Behaviour,
}

/// When the failing instance starts to fail: late enough that the first summaries show it
/// healthy, early enough that a 10 s run sees the failures.
pub const FAIL_AFTER: Duration = Duration::from_secs(3);

pub const CHILD_PROFILE: &str = "child-profile-service.child-services.svc.cluster.local";
pub const EMERGENCY_RESPONSE: &str = "emergency-response-service.emergency.svc.cluster.local";
pub const COMPLIANCE_REPORTING: &str = "compliance-reporting-service.government.svc.cluster.local";

/// The server instances, in the order of the example file.
pub const INSTANCES: &[Instance] = &[
    Instance {
        name: "child-profile-emergency-1",
        namespace: "child-services",
        service_account: "child-profile-service",
        host: CHILD_PROFILE,
        example_port: 15101,
        priority: Some("emergency"),
        behaviour: Behaviour::Echo,
    },
    Instance {
        name: "child-profile-standard-1",
        namespace: "child-services",
        service_account: "child-profile-service",
        host: CHILD_PROFILE,
        example_port: 15102,
        priority: Some("standard"),
        behaviour: Behaviour::Echo,
    },
    Instance {
        name: "child-profile-standard-2",
        namespace: "child-services",
        service_account: "child-profile-service",
        host: CHILD_PROFILE,
        example_port: 15103,
        priority: Some("standard"),
        behaviour: Behaviour::FailAfter(FAIL_AFTER),
    },
    Instance {
        name: "emergency-response-1",
        namespace: "emergency",
        service_account: "emergency-response-service",
        host: EMERGENCY_RESPONSE,
        example_port: 15104,
        priority: Some("critical"),
        behaviour: Behaviour::Echo,
    },
    Instance {
        name: "compliance-reporting-1",
        namespace: "government",
        service_account: "compliance-reporting-service",
        host: COMPLIANCE_REPORTING,
        example_port: 15105,
        priority: None,
        behaviour: Behaviour::Echo,
    },
    Instance {
        name: "compliance-reporting-2",
        namespace: "government",
        service_account: "compliance-reporting-service",
        host: COMPLIANCE_REPORTING,
        example_port: 15106,
        priority: None,
        behaviour: Behaviour::FailAfter(FAIL_AFTER),
    },
];

/// One client workload: a sidecar with an outbound listener per service it calls; the demo's
/// traffic generator plays its application.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub name: &'static str,
    pub namespace: &'static str,
    pub service_account: &'static str,
    /// The service hosts it calls.
    pub calls: &'static [&'static str],
}

/// The client workloads. Their identities are the principals the seed policies name, plus one
/// that no policy names.
pub const CLIENTS: &[Client] = &[
    Client {
        name: "child-profile-client",
        namespace: "child-services",
        service_account: "child-profile-client",
        calls: &[CHILD_PROFILE],
    },
    Client {
        name: "emergency-responder",
        namespace: "emergency",
        service_account: "emergency-response",
        calls: &[CHILD_PROFILE],
    },
    Client {
        name: "child-protection-officer",
        namespace: "child-services",
        service_account: "child-protection-officer",
        calls: &[EMERGENCY_RESPONSE],
    },
    Client {
        name: "government-official",
        namespace: "government",
        service_account: "government-official",
        calls: &[COMPLIANCE_REPORTING],
    },
    Client {
        name: "compliance-reporter",
        namespace: "child-services",
        service_account: "compliance-reporter",
        calls: &[COMPLIANCE_REPORTING],
    },
    Client {
        name: "unauthorised-client",
        namespace: "government",
        service_account: "unknown-contractor",
        calls: &[CHILD_PROFILE, EMERGENCY_RESPONSE],
    },
];

/// Writes the example files into `dir`, each instance's example port replaced by
/// `ports[example_port]`.
pub fn materialise(dir: &Path, ports: &BTreeMap<u16, u16>) -> Result<(), DemoError> {
    std::fs::create_dir_all(dir).map_err(DemoError::io(dir))?;
    for (name, text) in FILES {
        let text = if *name == SERVICES_FILE {
            replace_ports(text, ports)
        } else {
            (*text).to_owned()
        };
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(DemoError::io(&path))?;
    }
    Ok(())
}

/// Replaces `<key>: <example port>` values (a WorkloadEntry `ports` entry) line by line.
fn replace_ports(text: &str, ports: &BTreeMap<u16, u16>) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(&replace_port_line(line, ports));
    }
    out
}

fn replace_port_line(line: &str, ports: &BTreeMap<u16, u16>) -> String {
    let body = line.trim_end_matches(['\n', '\r']);
    let ending = &line[body.len()..];
    if let Some((key, value)) = body.rsplit_once(": ") {
        let key_ok = key
            .trim_start()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if key_ok
            && let Ok(port) = value.trim().parse::<u16>()
            && let Some(free) = ports.get(&port)
        {
            return format!("{key}: {free}{ending}");
        }
    }
    line.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> &'static str {
        FILES
            .iter()
            .find(|(n, _)| *n == SERVICES_FILE)
            .map(|(_, t)| *t)
            .unwrap()
    }

    #[test]
    fn every_example_port_appears_once_as_a_ports_value() {
        for i in INSTANCES {
            let needle = format!(": {}\n", i.example_port);
            assert_eq!(services().matches(&needle).count(), 1, "{}", i.name);
        }
    }

    #[test]
    fn materialised_files_carry_the_free_ports_and_import_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let ports: BTreeMap<u16, u16> = INSTANCES
            .iter()
            .enumerate()
            .map(|(n, i)| (i.example_port, 40_000 + n as u16))
            .collect();
        materialise(dir.path(), &ports).unwrap();
        let text = std::fs::read_to_string(dir.path().join(SERVICES_FILE)).unwrap();
        for (example, free) in &ports {
            assert!(!text.contains(&format!(": {example}\n")));
            assert!(text.contains(&format!(": {free}\n")));
        }
        assert!(text.contains("number: 8080"), "service ports are kept");
        let loaded = crate::istio::load_paths(&[dir.path().to_path_buf()]);
        let errors: Vec<_> = loaded.errors().map(|f| f.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(loaded.files.len(), FILES.len());
    }

    #[test]
    fn bundled_files_match_the_example_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let bundled: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(on_disk, bundled, "add new example files to FILES");
    }
}
