use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::*;

fn record(needs: &Needs, req: &[(&str, &str)], resp: &[(&str, &str)]) -> Record {
    let get = |list: &[(&str, &str)], n: &str| {
        list.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| (*v).to_owned())
    };
    Record {
        start: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)),
        request_headers: needs.request.iter().map(|n| get(req, n)).collect(),
        response_headers: needs.response.iter().map(|n| get(resp, n)).collect(),
        protocol: "HTTP/1.1",
        code: 200,
        grpc_status: None,
        flags: "-",
        duration: Duration::from_millis(42),
        upstream_cluster: Some("inbound|8080||".into()),
        upstream_host: Some("127.0.0.1:8080".parse().unwrap()),
        downstream_remote: Some("10.0.0.7:51234".parse::<SocketAddr>().unwrap()),
        downstream_local: Some("10.0.0.9:15006".parse::<SocketAddr>().unwrap()),
        peer_uri_san: Some("spiffe://cluster.local/ns/a/sa/b".into()),
        bytes_received: 12,
        bytes_sent: 345,
    }
}

#[test]
fn text_format_renders_every_operator_and_falls_back_for_missing_values() {
    let mut needs = Needs::default();
    let (f, unknown) = compile(
        "%START_TIME% %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% \
         %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% \
         %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_PEER_URI_SAN% %BYTES_RECEIVED% %BYTES_SENT% \
         %RESP(X-UP):3% %REQ(X-MISSING)% 100%%",
        &mut needs,
    )
    .unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    let line = f.render(&record(
        &needs,
        &[(":method", "GET"), (":path", "/a?b=1")],
        &[("x-up", "abcdef")],
    ));
    assert_eq!(
        line,
        "2026-11-18T11:06:40.123Z GET /a?b=1 HTTP/1.1 200 - 42 inbound|8080|| 127.0.0.1:8080 \
         10.0.0.7:51234 spiffe://cluster.local/ns/a/sa/b 12 345 abc - 100%\n"
    );
}

#[test]
fn req_alternative_is_used_only_when_the_first_header_is_absent() {
    let mut needs = Needs::default();
    let (f, _) = compile("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", &mut needs).unwrap();
    let r = record(
        &needs,
        &[(":path", "/new"), ("x-envoy-original-path", "/orig")],
        &[],
    );
    assert_eq!(f.render(&r), "/orig\n");
    let r = record(&needs, &[(":path", "/new")], &[]);
    assert_eq!(f.render(&r), "/new\n");
}

#[test]
fn json_format_escapes_values_keeps_numbers_and_marks_unknown_operators() {
    let mut needs = Needs::default();
    let text = r#"{
      "method": "%REQ(:METHOD)%",
      "reason": "%REQ(X-CHILD-ACCESS-REASON)%",
      "code": "%RESPONSE_CODE%",
      "code_text": "code=%RESPONSE_CODE%",
      "wasm": "%{FILTER_STATE(wasm.source_workload)}%",
      "nested": {"cluster": "%UPSTREAM_CLUSTER%"},
      "fixed": 7
    }"#;
    let (f, unknown) = compile(text, &mut needs).unwrap();
    assert_eq!(unknown, vec!["%{FILTER_STATE(wasm.source_workload)}%"]);
    let line = f.render(&record(
        &needs,
        &[
            (":method", "POST"),
            ("x-child-access-reason", "a \"quoted\"\nline"),
        ],
        &[],
    ));
    assert!(
        line.ends_with('\n') && !line.trim_end().contains('\n'),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["reason"], "a \"quoted\"\nline");
    assert_eq!(v["code"], 200);
    assert_eq!(v["code_text"], "code=200");
    assert_eq!(v["wasm"], "-");
    assert_eq!(v["nested"]["cluster"], "inbound|8080||");
    assert_eq!(v["fixed"], 7);
}

#[test]
fn credential_headers_are_never_captured_or_written() {
    let mut needs = Needs::default();
    let (f, _) = compile(
        "%REQ(Authorization)% %REQ(COOKIE)% %REQ(proxy-authorization)% %REQ(X-JALIN-PEER)% \
         %REQ(X-A?AUTHORIZATION)% %RESP(SET-COOKIE)%",
        &mut needs,
    )
    .unwrap();
    assert!(
        needs.request.is_empty() && needs.response.is_empty(),
        "{needs:?}"
    );
    let line = f.render(&record(&needs, &[("authorization", "Bearer secret")], &[]));
    assert_eq!(
        line,
        "[REDACTED] [REDACTED] [REDACTED] [REDACTED] [REDACTED] [REDACTED]\n"
    );
}

#[test]
fn the_default_format_compiles_without_warnings() {
    let mut needs = Needs::default();
    let (f, unknown) = compile(DEFAULT_TEXT_FORMAT, &mut needs).unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    let line = f.render(&record(&needs, &[(":method", "GET"), (":path", "/")], &[]));
    assert!(
        line.starts_with("[2026-11-18T11:06:40.123Z] \"GET / HTTP/1.1\" 200 - "),
        "{line}"
    );
    assert_eq!(line.matches('\n').count(), 1);
}

#[test]
fn malformed_formats_say_where_and_what_was_expected() {
    let mut needs = Needs::default();
    let e = compile("code %RESPONSE_CODE", &mut needs).unwrap_err();
    assert!(e.message.contains("character 6"), "{}", e.message);
    assert!(e.message.contains("%%"), "{}", e.message);
    let e = compile("a % b %", &mut needs).unwrap_err();
    assert!(
        e.message.contains("not a command operator"),
        "{}",
        e.message
    );
    let e = compile("{ not json", &mut needs).unwrap_err();
    assert!(e.message.contains("JSON object"), "{}", e.message);
    let e = compile(r#"{"a": ["%PROTOCOL%"]}"#, &mut needs).unwrap_err();
    assert!(e.message.contains("key `a`"), "{}", e.message);
}

#[test]
fn a_start_time_format_with_percent_signs_parses_and_is_reported() {
    let mut needs = Needs::default();
    let (f, notes) = compile("[%START_TIME(%Y/%m/%dT%H:%M:%S%z)%] %PROTOCOL%", &mut needs).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("START_TIME"), "{notes:?}");
    let line = f.render(&record(&needs, &[], &[]));
    assert_eq!(line, "[2026-11-18T11:06:40.123Z] HTTP/1.1\n");
}
