//! The HTTP side of the fake API server: routing, discovery documents, LIST and streaming WATCH.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use super::{Change, ResourceDef, Shared};

type Body = BoxBody<Bytes, Infallible>;

/// Bound of a watch stream's outgoing buffer, in events.
const WATCH_BUFFER: usize = 64;

pub(super) async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or a reset handshake: let other tasks run, then accept again.
            tokio::task::yield_now().await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, &request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(code, &status_object(code.as_u16(), reason, message))
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

async fn handle(shared: &Arc<Shared>, request: &Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API server is read-only over HTTP; tests change objects through its API",
        );
    }
    let path: Vec<&str> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let query = query(request);
    match path.as_slice() {
        ["api"] => full(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        ["api", "v1"] => resource_list(shared, "", "v1"),
        ["api", "v1", rest @ ..] => resource_request(shared, "", "v1", rest, &query).await,
        ["apis"] => {
            let groups: Vec<Value> = shared
                .groups
                .iter()
                .filter(|g| !g.name.is_empty())
                .map(|g| group_document(g.name, &g.versions))
                .collect();
            full(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["apis", group] => match shared.group(group) {
            Some(g) => full(StatusCode::OK, &group_document(g.name, &g.versions)),
            None => not_found(request),
        },
        ["apis", group, version] => resource_list(shared, group, version),
        ["apis", group, version, rest @ ..] => {
            resource_request(shared, group, version, rest, &query).await
        }
        _ => not_found(request),
    }
}

fn not_found(request: &Request<Incoming>) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource ({})",
            request.uri().path()
        ),
    )
}

fn group_document(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": name,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
        "versions": versions,
    })
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn resource_list(shared: &Shared, group: &str, version: &str) -> Response<Body> {
    let served = shared
        .group(group)
        .is_some_and(|g| g.versions.contains(&version));
    if !served {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "group version not served",
        );
    }
    let resources: Vec<Value> = shared
        .resources
        .iter()
        .filter(|r| r.group == group)
        .map(|r| {
            json!({
                "name": r.plural, "singularName": r.kind.to_ascii_lowercase(),
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "list", "watch"],
            })
        })
        .collect();
    full(
        StatusCode::OK,
        &json!({
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": api_version(group, version), "resources": resources,
        }),
    )
}

async fn resource_request(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    query: &HashMap<String, String>,
) -> Response<Body> {
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 1 => {
            (Some(*ns), *plural, tail.first().copied())
        }
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
    };
    let served = shared
        .group(group)
        .is_some_and(|g| g.versions.contains(&version));
    let Some(def) = shared.resource(group, plural).filter(|_| served).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({plural}.{group})"),
        );
    };
    let api_version = api_version(group, version);
    if let Some(name) = name {
        let ns = if def.namespaced {
            namespace.unwrap_or_default()
        } else {
            ""
        };
        let object = shared
            .lock()
            .objects
            .get(&(def.group, def.plural, ns.to_string(), name.to_string()))
            .cloned();
        return match object {
            Some(object) => full(StatusCode::OK, &served_as(object, &api_version)),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{plural} \"{name}\" not found"),
            ),
        };
    }
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if watch {
        watch_response(
            shared,
            def,
            namespace.map(str::to_string),
            api_version,
            query,
        )
        .await
    } else {
        list_response(shared, &def, namespace, &api_version, query)
    }
}

fn served_as(mut object: Value, api_version: &str) -> Value {
    if let Some(o) = object.as_object_mut() {
        o.insert("apiVersion".into(), json!(api_version));
    }
    object
}

fn list_response(
    shared: &Shared,
    def: &ResourceDef,
    namespace: Option<&str>,
    api_version: &str,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // A continue token is `<listRV>|<namespace>|<name>` of the last item returned.
    let after = query.get("continue").and_then(|c| {
        let mut parts = c.splitn(3, '|');
        Some((
            parts.next()?.parse::<u64>().ok()?,
            parts.next()?.to_string(),
            parts.next()?.to_string(),
        ))
    });
    if query.contains_key("continue") && after.is_none() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "invalid continue token",
        );
    }
    let inner = shared.lock();
    let list_rv = after.as_ref().map_or(inner.rv, |(rv, _, _)| *rv);
    let mut items = Vec::new();
    let mut next = None;
    for ((group, plural, ns, name), object) in &inner.objects {
        if *group != def.group || *plural != def.plural {
            continue;
        }
        if namespace.is_some_and(|want| want != ns) {
            continue;
        }
        if after
            .as_ref()
            .is_some_and(|(_, a_ns, a_name)| (ns, name) <= (a_ns, a_name))
        {
            continue;
        }
        if items.len() == limit {
            next = items
                .last()
                .map(|(ns, name, _): &(String, String, Value)| format!("{list_rv}|{ns}|{name}"));
            break;
        }
        // Items of a LIST carry no apiVersion/kind, as the real API server sends them.
        let mut item = object.clone();
        if let Some(o) = item.as_object_mut() {
            o.remove("apiVersion");
            o.remove("kind");
        }
        items.push((ns.clone(), name.clone(), item));
    }
    drop(inner);
    shared.lists_served.send_modify(|n| *n += 1);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    let items: Vec<Value> = items.into_iter().map(|(_, _, item)| item).collect();
    full(
        StatusCode::OK,
        &json!({
            "apiVersion": api_version, "kind": format!("{}List", def.kind),
            "metadata": metadata, "items": items,
        }),
    )
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn gone_line(from: &str, compacted: u64) -> Bytes {
    event_line(
        "ERROR",
        &status_object(
            410,
            "Expired",
            &format!("too old resource version: {from} ({compacted})"),
        ),
    )
}

fn matches(change: &Change, def: &ResourceDef, namespace: Option<&str>) -> bool {
    change.group == def.group
        && change.plural == def.plural
        && namespace.is_none_or(|ns| ns == change.namespace)
}

async fn watch_response(
    shared: &Arc<Shared>,
    def: ResourceDef,
    namespace: Option<String>,
    api_version: String,
    query: &HashMap<String, String>,
) -> Response<Body> {
    // A paused server holds the watch here: the client's watch is "down".
    let mut paused = shared.paused.subscribe();
    let _ = paused.wait_for(|p| !*p).await;
    let from = query.get("resourceVersion").cloned().unwrap_or_default();
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut first: Vec<Bytes> = Vec::new();
    let mut gone = false;
    let ns = namespace.as_deref();
    let subscription;
    let close;
    {
        let inner = shared.lock();
        if from.is_empty() || from == "0" {
            for ((group, plural, obj_ns, _), object) in &inner.objects {
                if *group == def.group && *plural == def.plural && ns.is_none_or(|n| n == obj_ns) {
                    first.push(event_line(
                        "ADDED",
                        &served_as(object.clone(), &api_version),
                    ));
                }
            }
        } else {
            match from.parse::<u64>() {
                Ok(rv) if rv >= inner.compacted => {
                    for change in inner.history.iter().filter(|c| c.rv > rv) {
                        if matches(change, &def, ns) {
                            let object = served_as(change.object.clone(), &api_version);
                            first.push(event_line(change.event_type, &object));
                        }
                    }
                }
                _ => {
                    first.push(gone_line(&from, inner.compacted));
                    gone = true;
                }
            }
        }
        subscription = shared.changes.subscribe();
        // Closes commanded from here on end this stream.
        close = shared.close.subscribe();
    }
    shared.watches_served.send_modify(|n| *n += 1);
    let (tx, rx) = mpsc::channel::<Bytes>(WATCH_BUFFER);
    let stream_shared = Arc::clone(shared);
    tokio::spawn(async move {
        for line in first {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if gone {
            return;
        }
        let streams = Streams {
            changes: subscription,
            close,
        };
        stream_changes(
            &stream_shared,
            streams,
            &tx,
            &def,
            namespace,
            &api_version,
            timeout,
        )
        .await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    let mut response = Response::new(StreamBody::new(body).boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// What a watch stream listens to.
struct Streams {
    changes: broadcast::Receiver<Arc<Change>>,
    close: tokio::sync::watch::Receiver<super::CloseCommand>,
}

async fn stream_changes(
    shared: &Shared,
    streams: Streams,
    tx: &mpsc::Sender<Bytes>,
    def: &ResourceDef,
    namespace: Option<String>,
    api_version: &str,
    timeout: Option<Duration>,
) {
    let Streams {
        changes: mut subscription,
        mut close,
    } = streams;
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            change = subscription.recv() => match change {
                Ok(change) => {
                    if matches(&change, def, namespace.as_deref()) {
                        let object = served_as(change.object.clone(), api_version);
                        if tx.send(event_line(change.event_type, &object)).await.is_err() {
                            return;
                        }
                    }
                }
                // Fallen behind or shutting down: end the stream; the client resumes.
                Err(_) => return,
            },
            changed = close.changed() => {
                if changed.is_ok() && close.borrow().gone {
                    let compacted = shared.lock().compacted;
                    let _ = tx.send(gone_line("(expired)", compacted)).await;
                }
                return;
            }
            () = &mut deadline => return,
            () = tx.closed() => return,
        }
    }
}
