//! Watches: newline-delimited `{"type","object"}` events from a revision, filtered by namespace
//! and selectors, with bookmarks and upstream's resourceVersion rules.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::codec;
use crate::errors::ApiError;
use crate::object;
use crate::request::wants_table;
use crate::resources::ResourceDef;
use crate::rest::{list_items, prefix, Ctx};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::storage::{EventKind, StorageError, WatchEvent};

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

/// Starts a watch. The initial state is sent as ADDED events when the resourceVersion is "" or
/// "0" (or `sendInitialEvents=true`), then changes after it.
pub async fn watch(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let def = ctx.def();
    let labels = LabelSelector::parse(ctx.params.str("labelSelector"))?;
    let fields = FieldSelector::parse(ctx.params.str("fieldSelector"), def)?;
    let rv_param = ctx.params.str("resourceVersion").to_string();
    let send_initial = ctx.params.flag("sendInitialEvents");
    let bookmarks = ctx.params.flag("allowWatchBookmarks");
    let timeout = ctx
        .params
        .u64("timeoutSeconds")?
        .map(Duration::from_secs)
        // Upstream spreads watch lifetimes between 30 and 60 minutes when none is asked.
        .unwrap_or(Duration::from_secs(1800 + rand_secs(1800)));
    let table = wants_table(ctx.headers);

    let mut initial = Vec::new();
    let from: u64 = if rv_param.is_empty() || rv_param == "0" || send_initial {
        let (items, rv, _) = list_items(ctx).await?;
        initial = items;
        rv
    } else {
        rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion: {rv_param}")))?
    };
    let pfx = prefix(def, ctx.target.namespace.as_deref());
    let events = match ctx.server.store.watch(&pfx, from).await {
        Ok(s) => s,
        Err(e @ StorageError::Compacted { .. }) => {
            // Upstream answers an expired watch with a 200 stream holding one ERROR event.
            let status = ApiError::from_storage(e, def.group, def.plural, "").status();
            let line = json!({"type": "ERROR", "object": status}).to_string() + "\n";
            return Ok(stream_response(Body::from(line)));
        }
        Err(e) => return Err(ApiError::from_storage(e, def.group, def.plural, "")),
    };

    let shutdown = ctx.server.shutdown.clone();
    let stream = async_stream(
        def,
        initial,
        from,
        events,
        Filter { labels, fields },
        table,
        bookmarks,
        send_initial,
    );
    let stream = stream
        .take_until(tokio::time::sleep(timeout))
        .take_until(async move { shutdown.cancelled().await });
    Ok(stream_response(Body::from_stream(
        stream.map(Ok::<_, std::io::Error>),
    )))
}

fn rand_secs(max: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % max as u128) as u64
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("static headers are valid")
}

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&object::labels(obj)) && self.fields.matches(obj)
    }
}

fn line(kind: &str, obj: Value, def: &ResourceDef, table: bool) -> bytes::Bytes {
    let obj = if table && kind != "BOOKMARK" && kind != "ERROR" {
        codec::table(def, &[obj], None, None)
    } else {
        obj
    };
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    bytes::Bytes::from(s)
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta})
}

/// The watch line of an event for a watcher without selectors, table output or version
/// conversion: the stored bytes with `resourceVersion` spliced into their metadata, without
/// parsing them (most watchers — informers — are such; parsing each event once per watcher
/// was most of the watch cost). `None` when the bytes do not have the expected shape.
fn spliced_line(ev: &WatchEvent) -> Option<bytes::Bytes> {
    let kind = match ev.kind {
        EventKind::Created => "ADDED",
        EventKind::Modified => "MODIFIED",
        EventKind::Deleted => "DELETED",
    };
    let value = &ev.kv.value[..];
    let at = metadata_body(value)?;
    let rv = ev.revision().to_string();
    let empty = value.get(at) == Some(&b'}');
    let mut out = Vec::with_capacity(value.len() + rv.len() + 64);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(&value[..at]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.as_bytes());
    out.push(b'"');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&value[at..]);
    out.extend_from_slice(b"}\n");
    Some(bytes::Bytes::from(out))
}

/// The offset just after the `{` of the top-level `"metadata"` object of compact JSON (as
/// `serde_json::to_vec` writes it), found by a scan that skips strings and nested values.
fn metadata_body(json: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    let mut key_start: Option<usize> = None;
    let mut expect_key = false;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    if json[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1 && expect_key {
                    key_start = Some(start);
                }
                let key = key_start.take().map(|k| &json[k..i]);
                i += 1;
                if depth == 1 && expect_key {
                    expect_key = false;
                    if key == Some(b"metadata".as_slice()) && json.get(i) == Some(&b':') {
                        return (json.get(i + 1) == Some(&b'{')).then_some(i + 2);
                    }
                }
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1 && json[i] == b'{';
            }
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Turns one storage event into the event this watcher sees, if any: an object that starts to
/// match the selectors is ADDED, one that stops matching is DELETED, as upstream's cacher does.
fn translate(
    ev: &WatchEvent,
    def: &ResourceDef,
    filter: &Filter,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    let mut obj = codec::from_stored(&ev.kv, def)?;
    codec::set_resource_version(&mut obj, ev.revision());
    let now = filter.matches(&obj);
    let before = match &ev.prev {
        Some(prev) if ev.kind == EventKind::Modified => {
            filter.matches(&codec::from_stored(prev, def)?)
        }
        _ => false,
    };
    Ok(match ev.kind {
        EventKind::Created if now => Some(("ADDED", obj)),
        EventKind::Deleted if now => Some(("DELETED", obj)),
        EventKind::Modified if now && before => Some(("MODIFIED", obj)),
        EventKind::Modified if now => Some(("ADDED", obj)),
        EventKind::Modified if before => Some(("DELETED", obj)),
        _ => None,
    })
}

#[allow(clippy::too_many_arguments)]
fn async_stream(
    def: &'static ResourceDef,
    initial: Vec<Value>,
    from: u64,
    events: crate::storage::WatchStream,
    filter: Filter,
    table: bool,
    bookmarks: bool,
    send_initial: bool,
) -> impl futures::Stream<Item = bytes::Bytes> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    tokio::spawn(async move {
        for obj in initial {
            if tx.send(line("ADDED", obj, def, table)).await.is_err() {
                return;
            }
        }
        if send_initial
            && bookmarks
            && tx
                .send(line("BOOKMARK", bookmark(def, from, true), def, false))
                .await
                .is_err()
        {
            return;
        }
        let mut last = from;
        let mut events = events;
        // Every event goes out as stored: no selector, no table, no conversion.
        let storage = def.storage_def();
        let plain = filter.labels.is_empty()
            && filter.fields.is_empty()
            && !table
            && storage.group == def.group
            && storage.version == def.version;
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = events.next() => {
                    let out = match ev {
                        None => return,
                        Some(Err(e)) => {
                            let status = ApiError::from_storage(e, def.group, def.plural, "").status();
                            let _ = tx.send(line("ERROR", status, def, false)).await;
                            return;
                        }
                        Some(Ok(ev)) => {
                            last = ev.revision();
                            if let Some(line) = plain.then(|| spliced_line(&ev)).flatten() {
                                line
                            } else {
                            match translate(&ev, def, &filter) {
                                Ok(Some((kind, obj))) => line(kind, obj, def, table),
                                Ok(None) => continue,
                                Err(e) => line("ERROR", e.status(), def, false),
                            }
                            }
                        }
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
                _ = tick.tick(), if bookmarks => {
                    if tx.send(line("BOOKMARK", bookmark(def, last, false), def, false)).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod splice_tests {
    use super::*;
    use crate::storage::KeyValue;

    fn event(kind: EventKind, value: &Value) -> WatchEvent {
        WatchEvent {
            kind,
            kv: KeyValue {
                key: "/pods/default/p".into(),
                value: bytes::Bytes::from(serde_json::to_vec(value).unwrap()),
                create_revision: 3,
                mod_revision: 42,
            },
            prev: None,
        }
    }

    #[test]
    fn the_spliced_line_is_the_stored_object_with_its_resource_version() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {}}),
            // An empty metadata, and keys named metadata in strings and nested objects first.
            json!({"kind": "X", "note": "\"metadata\":{", "spec": {"metadata": {"x": 1}, "l": [{"metadata": {}}]}, "metadata": {}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d\\\"}"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}),
        ];
        for obj in objects {
            for (kind, name) in [
                (EventKind::Created, "ADDED"),
                (EventKind::Modified, "MODIFIED"),
                (EventKind::Deleted, "DELETED"),
            ] {
                let line = spliced_line(&event(kind, &obj)).expect("spliced");
                assert!(line.ends_with(b"\n"));
                let got: Value = serde_json::from_slice(&line).expect("valid JSON");
                let mut want = obj.clone();
                want["metadata"]["resourceVersion"] = json!("42");
                assert_eq!(got, json!({"type": name, "object": want}));
            }
        }
    }

    #[test]
    fn objects_without_a_metadata_object_take_the_parsing_path() {
        for obj in [
            json!({"kind": "X"}),
            json!({"metadata": "x"}),
            json!([1, 2]),
        ] {
            assert!(spliced_line(&event(EventKind::Created, &obj)).is_none());
        }
    }
}
