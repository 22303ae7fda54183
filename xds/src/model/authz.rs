//! Native AuthorizationPolicy and RequestAuthentication: Istio's semantics, typed and normalised.
//!
//! The importer maps `security.istio.io` resources onto these types; the engine in
//! [`crate::authz`] compiles them into matchers. Field names follow Istio's so that a reader of
//! Istio's documentation can read this model.

use serde::{Deserialize, Serialize};

use super::{ResourceMeta, WorkloadSelector};

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow the request when a rule matches (Istio's default action).
    #[default]
    Allow,
    /// Deny the request when a rule matches.
    Deny,
    /// Record the match; never changes the decision.
    Audit,
    /// Ask an external authorizer (named by `provider`) when a rule matches.
    Custom,
}

/// One AuthorizationPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Name, namespace and origin.
    pub meta: ResourceMeta,
    /// Workloads this policy applies to; `None` means every workload in the namespace (or the
    /// whole mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The policy's action.
    #[serde(default)]
    pub action: Action,
    /// Name of the extension provider, for `Custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Rules, ORed. An empty list matches nothing (`spec: {}` allows nothing); a list with one
    /// empty rule matches everything.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// `istio.io/dry-run: "true"`: evaluated and logged, never enforced.
    #[serde(default)]
    pub dry_run: bool,
}

/// One rule: `from`, `to` and `when` are ANDed; within each, the entries are ORed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Sources, ORed. Empty matches any source.
    #[serde(default)]
    pub from: Vec<Source>,
    /// Operations, ORed. Empty matches any operation.
    #[serde(default)]
    pub to: Vec<Operation>,
    /// Conditions, ANDed. Empty matches always.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// Who sent the request. Fields are ANDed; values within a field are ORed. Empty fields are
/// not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Source {
    /// Peer identities `<trust-domain>/ns/<ns>/sa/<sa>`; exact, prefix (`x*`), suffix (`*x`) or `*`.
    pub principals: Vec<String>,
    /// Negative match on `principals`: a plaintext peer (no identity) matches every `notPrincipals`.
    pub not_principals: Vec<String>,
    /// Request identities `iss/sub` from a validated JWT (RequestAuthentication); `*` = any
    /// request with a valid token.
    pub request_principals: Vec<String>,
    /// Negative match on `request_principals`; a request without a token matches.
    pub not_request_principals: Vec<String>,
    /// Peer namespaces (from the peer certificate).
    pub namespaces: Vec<String>,
    /// Negative match on `namespaces`.
    pub not_namespaces: Vec<String>,
    /// Service accounts `ns/sa` (Istio 1.22+); cannot be combined with principals or namespaces.
    pub service_accounts: Vec<String>,
    /// Negative match on `service_accounts`.
    pub not_service_accounts: Vec<String>,
    /// Peer IP addresses or CIDR blocks.
    pub ip_blocks: Vec<String>,
    /// Negative match on `ip_blocks`.
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs (X-Forwarded-For with numTrustedProxies), addresses or CIDR blocks.
    pub remote_ip_blocks: Vec<String>,
    /// Negative match on `remote_ip_blocks`.
    pub not_remote_ip_blocks: Vec<String>,
}

/// What the request does. Fields are ANDed; values within a field are ORed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Operation {
    /// Host/authority, case-insensitive; exact, prefix, suffix or `*`. A value without a port
    /// matches the authority with or without one.
    pub hosts: Vec<String>,
    /// Negative match on `hosts`.
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings as in Istio.
    pub ports: Vec<String>,
    /// Negative match on `ports`.
    pub not_ports: Vec<String>,
    /// HTTP methods (case-sensitive, as sent: `GET`).
    pub methods: Vec<String>,
    /// Negative match on `methods`.
    pub not_methods: Vec<String>,
    /// Paths (normalised before matching); exact, prefix, suffix, `*`, or `{*}`/`{**}` templates.
    pub paths: Vec<String>,
    /// Negative match on `paths`.
    pub not_paths: Vec<String>,
}

/// A `when` condition: `key` matches one of `values` and none of `not_values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Attribute: `request.headers[name]`, `source.ip`, `remote.ip`, `source.namespace`,
    /// `source.principal`, `request.auth.principal`, `request.auth.audiences`,
    /// `request.auth.presenter`, `request.auth.claims[name]`, `destination.ip`,
    /// `destination.port`, `connection.sni`, or jalin's
    /// `source.certificate_fingerprint` (hex SHA-256 of the peer certificate; `*` = any verified
    /// peer certificate).
    pub key: String,
    /// Values, ORed (exact, prefix `x*`, suffix `*x`, presence `*`; CIDR blocks for IP keys).
    #[serde(default)]
    pub values: Vec<String>,
    /// Values that must not match; an absent attribute matches every `not_values`.
    #[serde(default)]
    pub not_values: Vec<String>,
    /// The importer could not evaluate `key` (a key outside Istio's list, or Envoy filter
    /// metadata); `jalin import` reported it as unsupported. The condition fails closed: it
    /// holds in DENY and CUSTOM policies (the rule denies, or asks the provider, whenever its
    /// other fields match) and never holds in ALLOW and AUDIT policies (the rule grants and
    /// records nothing). `values`/`not_values` are not read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown_key: bool,
}

/// A RequestAuthentication: which JWT issuers a workload accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestAuthentication {
    /// Name, namespace and origin.
    pub meta: ResourceMeta,
    /// Workloads this applies to; `None`: the namespace (or the mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Accepted issuers; the rules of every applicable RequestAuthentication are combined.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

/// One accepted JWT issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JwtRule {
    /// Required `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any audience.
    pub audiences: Vec<String>,
    /// JWKS document inline (JSON).
    pub jwks: Option<String>,
    /// JWKS URL (`file://` or `http(s)://`).
    pub jwks_uri: Option<String>,
    /// Where to look for the token: header names (with prefix) and query parameters. Empty means
    /// `Authorization: Bearer <token>` and `?access_token=`, as Istio does.
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token is read from.
    pub from_params: Vec<String>,
    /// Keep the token header when forwarding (default: it is removed).
    pub forward_original_token: bool,
    /// Claims copied to request headers.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
}

/// A header a JWT is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Prefix before the token (`Bearer `), compared case-insensitively.
    #[serde(default)]
    pub prefix: String,
}

/// A claim copied to a request header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header to set.
    pub header: String,
    /// Claim name; nested claims as `a.b`.
    pub claim: String,
}
