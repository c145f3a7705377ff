//! Serving a `wasi:http/incoming-handler` component: the kubelet listens on the pod's
//! address and creates one instance per request from a pre-instantiated [`ProxyPre`] (pooling
//! allocator), so an idle HTTP pod holds no instance. Each request gets its own store with the
//! container's grants and limits; the guest's stdout/stderr go to the container log.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wasmtime::Store;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::logs::{LogFile, Stream};
use super::sandbox::MemoryLimiter;
use super::{yield_every_tick, ContainerSpec, Exit, P2State, EXIT_KILLED};

/// Binds `addrs` and serves `pre` on them (see [`serve_listeners`]).
pub(crate) async fn serve(
    pre: &ProxyPre<P2State>,
    spec: &ContainerSpec,
    log: &LogFile,
    stop: &CancellationToken,
) -> Exit {
    if spec.listen.is_empty() {
        return Exit {
            exit_code: 1,
            reason: "Error",
            message: Some(
                "a wasi:http/incoming-handler component is served on its containerPorts: \
                 the container declares none"
                    .into(),
            ),
        };
    }
    let mut listeners = Vec::new();
    for addr in &spec.listen {
        match TcpListener::bind(addr).await {
            Ok(l) => listeners.push(l),
            Err(e) => {
                return Exit {
                    exit_code: 1,
                    reason: "Error",
                    message: Some(format!("listening on {addr}: {e}")),
                }
            }
        }
    }
    serve_listeners(pre, spec, log, listeners, stop).await
}

/// Serves `pre` on `listeners` until `spec.drain` (stop accepting, let in-flight requests
/// finish: exit 0) or `stop` (drop everything: exit 137).
pub(crate) async fn serve_listeners(
    pre: &ProxyPre<P2State>,
    spec: &ContainerSpec,
    log: &LogFile,
    listeners: Vec<TcpListener>,
    stop: &CancellationToken,
) -> Exit {
    let mut accepts = JoinSet::new();
    let mut connections = JoinSet::new();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
    for listener in listeners {
        let tx = conn_tx.clone();
        accepts.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        // Responses go out whole at once: no Nagle wait for a delayed ACK.
                        let _ = stream.set_nodelay(true);
                        if tx.send((stream, peer)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    drop(conn_tx);
    let drain = spec.drain.clone();
    // Shared by every request of this container (a request clones only the `Arc`).
    let handler = Handler {
        pre: pre.clone(),
        spec: Arc::new(spec.clone()),
        log: log.clone(),
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                accepts.abort_all();
                connections.abort_all();
                return killed();
            }
            () = drain.cancelled() => break,
            conn = conn_rx.recv() => {
                let Some((stream, _peer)) = conn else { break };
                let handler = handler.clone();
                let drain = drain.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler.handle(req).await) }
                    });
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    let served = tokio::select! {
                        r = conn.as_mut() => r,
                        () = drain.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!("http connection: {e}");
                    }
                });
            }
        }
    }
    // Draining: no new connections; in-flight requests finish (until `stop`).
    accepts.abort_all();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                connections.abort_all();
                return killed();
            }
            next = connections.join_next() => {
                if next.is_none() {
                    return Exit { exit_code: 0, reason: "Completed", message: None };
                }
            }
        }
    }
}

fn killed() -> Exit {
    Exit {
        exit_code: EXIT_KILLED,
        reason: "Error",
        message: Some("stopped by the kubelet (epoch interruption)".into()),
    }
}

#[derive(Clone)]
struct Handler {
    pre: ProxyPre<P2State>,
    spec: Arc<ContainerSpec>,
    log: LogFile,
}

impl Handler {
    /// One request: a fresh store and instance; a trap or a missing response is a 500 and a
    /// line in the container log, and the container keeps serving.
    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let mut store = Store::new(
            self.pre.engine(),
            P2State::new(
                &self.spec,
                &self.log,
                MemoryLimiter::new(self.spec.memory_limit, self.spec.usage.clone()),
            ),
        );
        store.limiter(|s| &mut s.limiter);
        yield_every_tick(&mut store, self.spec.cpu_millis);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, req)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            wasmtime::Result::<_>::Ok((req, out))
        })();
        let (req, out) = match prepared {
            Ok(p) => p,
            Err(e) => return self.fail(format!("request rejected: {e:#}"), 400),
        };
        let pre = self.pre.clone();
        let usage = self.spec.usage.clone();
        // The guest runs in its own task: it may keep writing the body after the head is sent.
        let task = tokio::spawn(async move {
            let result = super::sandbox::metered(&usage, async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            let refused = store.data().limiter.refused;
            result.map_err(|e| {
                if refused {
                    format!("memory limit reached: {}", e.root_cause())
                } else {
                    match e.downcast_ref::<wasmtime::Trap>() {
                        Some(trap) => format!("{trap}: {}", e.root_cause()),
                        None => format!("{:#}", e),
                    }
                }
            })
        });
        match receiver.await {
            Ok(Ok(resp)) => {
                let log = self.log.clone();
                tokio::spawn(async move {
                    if let Ok(Err(e)) = task.await {
                        log.note(Stream::Stderr, &format!("request failed: {e}"));
                    }
                });
                resp
            }
            Ok(Err(code)) => self.fail(format!("the handler answered an error: {code:?}"), 500),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => "the handler returned without setting a response".to_string(),
                    Ok(Err(e)) => e,
                    Err(e) => format!("handler task: {e}"),
                };
                self.fail(format!("request failed: {why}"), 500)
            }
        }
    }

    fn fail(&self, message: String, status: u16) -> hyper::Response<HyperOutgoingBody> {
        self.log.note(Stream::Stderr, &message);
        let body = Full::new(Bytes::from(format!(
            "{}\n",
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
        )))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
        let mut resp = hyper::Response::new(body);
        *resp.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        resp
    }
}
