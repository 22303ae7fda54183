//! The retry classifier: Envoy's `retry_on` vocabulary as Istio passes it through, compiled into
//! a bit set, and `should_retry` deciding from one try's [`Outcome`].
//!
//! Semantics follow Envoy's router: `5xx`, `gateway-error` and `reset` also cover requests that
//! got no response at all (reset, connect failure, refused stream, per-try timeout); a per-try
//! timeout counts as a 504. Overflow of a local limit is never retried (a retry would only add
//! load to the limit that just overflowed).

use std::time::Duration;

use jalin_xds::model::route::RetryPolicy;

/// gRPC status codes named in the `retry_on` vocabulary.
pub mod grpc {
    pub const CANCELLED: u32 = 1;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
}

/// The result of one try, as far as retrying cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived. `grpc_status` is taken from the headers of a trailers-only
    /// response (as Envoy does), when present.
    Response {
        status: u16,
        grpc_status: Option<u32>,
    },
    /// The upstream reset or closed the stream/connection before a response.
    Reset,
    /// The connection to the endpoint could not be established.
    ConnectFailure,
    /// HTTP/2 `REFUSED_STREAM`: the upstream did not process the request.
    RefusedStream,
    /// `perTryTimeout` expired before the response headers.
    PerTryTimeout,
    /// A local circuit-breaker limit overflowed.
    Overflow,
}

/// The set of retry conditions, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: Self = Self(1 << 0);
    pub const GATEWAY_ERROR: Self = Self(1 << 1);
    pub const RESET: Self = Self(1 << 2);
    pub const CONNECT_FAILURE: Self = Self(1 << 3);
    pub const REFUSED_STREAM: Self = Self(1 << 4);
    pub const RETRIABLE_4XX: Self = Self(1 << 5);
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 6);
    pub const GRPC_CANCELLED: Self = Self(1 << 7);
    pub const GRPC_DEADLINE_EXCEEDED: Self = Self(1 << 8);
    pub const GRPC_INTERNAL: Self = Self(1 << 9);
    pub const GRPC_RESOURCE_EXHAUSTED: Self = Self(1 << 10);
    pub const GRPC_UNAVAILABLE: Self = Self(1 << 11);

    /// Every token this classifier understands, with its bit.
    pub const VOCABULARY: &'static [(&'static str, Self)] = &[
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("cancelled", Self::GRPC_CANCELLED),
        ("deadline-exceeded", Self::GRPC_DEADLINE_EXCEEDED),
        ("internal", Self::GRPC_INTERNAL),
        ("resource-exhausted", Self::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", Self::GRPC_UNAVAILABLE),
    ];

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

/// A `retryOn` token that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown retryOn condition `{token}`; expected a status code (100-599) or one of 5xx, gateway-error, reset, \
     connect-failure, refused-stream, retriable-4xx, retriable-status-codes, cancelled, deadline-exceeded, internal, \
     resource-exhausted, unavailable"
)]
pub struct RetryOnError {
    pub token: String,
}

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRetryPolicy {
    /// Retries after the first try; 0 disables retrying.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    /// Codes retried under `retriable-status-codes`.
    pub status_codes: Vec<u16>,
}

impl CompiledRetryPolicy {
    /// Parses `retry_on`: named conditions set bits, numeric tokens are status codes and imply
    /// `retriable-status-codes` (as Istio's conversion does). Empty tokens are ignored.
    pub fn compile(policy: &RetryPolicy) -> Result<Self, RetryOnError> {
        let mut on = RetryOn::default();
        let mut status_codes = policy.retriable_status_codes.clone();
        for token in policy
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if let Ok(code) = token.parse::<u16>() {
                if !(100..=599).contains(&code) {
                    return Err(RetryOnError {
                        token: token.to_owned(),
                    });
                }
                status_codes.push(code);
                on.insert(RetryOn::RETRIABLE_STATUS_CODES);
                continue;
            }
            let bit = RetryOn::VOCABULARY
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(token))
                .map(|(_, b)| *b)
                .ok_or_else(|| RetryOnError {
                    token: token.to_owned(),
                })?;
            on.insert(bit);
        }
        status_codes.sort_unstable();
        status_codes.dedup();
        Ok(Self {
            attempts: policy.attempts,
            per_try_timeout: policy.per_try_timeout_ms.map(Duration::from_millis),
            on,
            status_codes,
        })
    }
}

/// Whether a try with this outcome should be retried under `policy` (attempt counting, budgets
/// and breaker limits are the caller's, see `retry` and `admission`).
pub fn should_retry(policy: &CompiledRetryPolicy, outcome: &Outcome) -> bool {
    if policy.attempts == 0 {
        return false;
    }
    let on = policy.on;
    let no_response = on.contains(RetryOn::FIVE_XX)
        || on.contains(RetryOn::GATEWAY_ERROR)
        || on.contains(RetryOn::RESET);
    match *outcome {
        Outcome::Overflow => false,
        Outcome::ConnectFailure => no_response || on.contains(RetryOn::CONNECT_FAILURE),
        Outcome::RefusedStream => no_response || on.contains(RetryOn::REFUSED_STREAM),
        Outcome::Reset => no_response,
        Outcome::PerTryTimeout => no_response || status_retriable(policy, 504),
        Outcome::Response {
            status,
            grpc_status,
        } => status_retriable(policy, status) || grpc_status.is_some_and(|g| grpc_retriable(on, g)),
    }
}

fn status_retriable(policy: &CompiledRetryPolicy, status: u16) -> bool {
    let on = policy.on;
    (on.contains(RetryOn::FIVE_XX) && (500..=599).contains(&status))
        || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
        || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
        || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
            && policy.status_codes.binary_search(&status).is_ok())
}

fn grpc_retriable(on: RetryOn, code: u32) -> bool {
    match code {
        grpc::CANCELLED => on.contains(RetryOn::GRPC_CANCELLED),
        grpc::DEADLINE_EXCEEDED => on.contains(RetryOn::GRPC_DEADLINE_EXCEEDED),
        grpc::INTERNAL => on.contains(RetryOn::GRPC_INTERNAL),
        grpc::RESOURCE_EXHAUSTED => on.contains(RetryOn::GRPC_RESOURCE_EXHAUSTED),
        grpc::UNAVAILABLE => on.contains(RetryOn::GRPC_UNAVAILABLE),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: &str) -> CompiledRetryPolicy {
        CompiledRetryPolicy::compile(&RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: retry_on.into(),
            retriable_status_codes: vec![],
        })
        .unwrap()
    }

    fn http(status: u16) -> Outcome {
        Outcome::Response {
            status,
            grpc_status: None,
        }
    }

    fn grpc_out(code: u32) -> Outcome {
        Outcome::Response {
            status: 200,
            grpc_status: Some(code),
        }
    }

    const NO_RESPONSE: [Outcome; 4] = [
        Outcome::Reset,
        Outcome::ConnectFailure,
        Outcome::RefusedStream,
        Outcome::PerTryTimeout,
    ];

    #[test]
    fn istio_default_policy() {
        let p = CompiledRetryPolicy::compile(&RetryPolicy::default()).unwrap();
        assert_eq!(p.attempts, 2);
        assert!(should_retry(&p, &Outcome::ConnectFailure));
        assert!(should_retry(&p, &Outcome::RefusedStream));
        assert!(should_retry(&p, &grpc_out(grpc::UNAVAILABLE)));
        assert!(should_retry(&p, &grpc_out(grpc::CANCELLED)));
        assert!(should_retry(&p, &http(503)));
        assert!(!should_retry(&p, &http(500)));
        assert!(!should_retry(&p, &http(502)));
        assert!(!should_retry(&p, &Outcome::Reset));
        assert!(!should_retry(&p, &grpc_out(grpc::INTERNAL)));
        assert!(!should_retry(&p, &Outcome::Overflow));
    }

    #[test]
    fn five_xx() {
        let p = policy("5xx");
        for s in [500, 501, 503, 599] {
            assert!(should_retry(&p, &http(s)), "{s}");
        }
        for s in [200, 404, 409, 429] {
            assert!(!should_retry(&p, &http(s)), "{s}");
        }
        for o in NO_RESPONSE {
            assert!(should_retry(&p, &o), "{o:?}");
        }
        assert!(!should_retry(&p, &grpc_out(grpc::UNAVAILABLE)));
    }

    #[test]
    fn gateway_error() {
        let p = policy("gateway-error");
        for s in [502, 503, 504] {
            assert!(should_retry(&p, &http(s)));
        }
        assert!(!should_retry(&p, &http(500)));
        for o in NO_RESPONSE {
            assert!(should_retry(&p, &o), "{o:?}");
        }
    }

    #[test]
    fn reset_connect_failure_refused_stream() {
        let p = policy("reset");
        for o in NO_RESPONSE {
            assert!(should_retry(&p, &o), "{o:?}");
        }
        assert!(!should_retry(&p, &http(503)));
        let p = policy("connect-failure");
        assert!(should_retry(&p, &Outcome::ConnectFailure));
        assert!(!should_retry(&p, &Outcome::Reset));
        assert!(!should_retry(&p, &Outcome::RefusedStream));
        assert!(!should_retry(&p, &http(503)));
        let p = policy("refused-stream");
        assert!(should_retry(&p, &Outcome::RefusedStream));
        assert!(!should_retry(&p, &Outcome::ConnectFailure));
        assert!(!should_retry(&p, &Outcome::Reset));
    }

    #[test]
    fn retriable_4xx_and_codes() {
        let p = policy("retriable-4xx");
        assert!(should_retry(&p, &http(409)));
        assert!(!should_retry(&p, &http(404)));
        assert!(!should_retry(&p, &http(503)));
        let p = policy("retriable-status-codes");
        assert!(!should_retry(&p, &http(503)), "no codes listed");
        let p = policy("429, 503");
        assert!(p.on.contains(RetryOn::RETRIABLE_STATUS_CODES));
        assert!(should_retry(&p, &http(429)));
        assert!(should_retry(&p, &http(503)));
        assert!(!should_retry(&p, &http(500)));
        let p = policy("504");
        assert!(
            should_retry(&p, &Outcome::PerTryTimeout),
            "per-try timeout counts as 504"
        );
    }

    #[test]
    fn grpc_conditions() {
        let cases = [
            ("cancelled", grpc::CANCELLED),
            ("deadline-exceeded", grpc::DEADLINE_EXCEEDED),
            ("internal", grpc::INTERNAL),
            ("resource-exhausted", grpc::RESOURCE_EXHAUSTED),
            ("unavailable", grpc::UNAVAILABLE),
        ];
        for (token, code) in cases {
            let p = policy(token);
            assert!(should_retry(&p, &grpc_out(code)), "{token}");
            for (_, other) in cases.iter().filter(|(t, _)| *t != token) {
                assert!(!should_retry(&p, &grpc_out(*other)), "{token} vs {other}");
            }
            assert!(!should_retry(&p, &http(503)), "{token}");
            assert!(!should_retry(&p, &Outcome::Reset), "{token}");
        }
        assert!(!should_retry(&policy("unavailable"), &grpc_out(0)));
    }

    #[test]
    fn seed_policy_and_errors() {
        let p = policy("5xx,reset,connect-failure,refused-stream");
        assert!(should_retry(&p, &http(500)));
        assert!(!should_retry(&p, &http(404)));
        let e = CompiledRetryPolicy::compile(&RetryPolicy {
            retry_on: "5xx,envoy-ratelimited".into(),
            ..RetryPolicy::default()
        })
        .unwrap_err();
        assert_eq!(e.token, "envoy-ratelimited");
        assert!(e.to_string().contains("gateway-error"));
        assert!(
            CompiledRetryPolicy::compile(&RetryPolicy {
                retry_on: "999".into(),
                ..RetryPolicy::default()
            })
            .is_err()
        );
        let off = CompiledRetryPolicy::compile(&RetryPolicy::disabled()).unwrap();
        assert!(!should_retry(&off, &Outcome::ConnectFailure));
    }
}
