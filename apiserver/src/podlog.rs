//! `GET pods/{name}/log`: proxied to the kubelet of the pod's node
//! (`/containerLogs/{ns}/{pod}/{container}` on its `daemonEndpoints.kubeletEndpoint.Port`).

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::codec;
use crate::errors::ApiError;
use crate::rest::{self, Ctx};

/// Query parameters forwarded to the kubelet as they came.
const FORWARDED: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "limitBytes",
];

async fn get(ctx: &Ctx<'_>, plural: &str, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
    let def = crate::resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("no {plural} resource")))?;
    let kv = ctx
        .server
        .store
        .get(&rest::key(def, ns, name))
        .await
        .map_err(|e| ApiError::from_storage(e, "", plural, name))?
        .ok_or_else(|| ApiError::not_found("", plural, name))?;
    codec::from_stored(&kv, def)
}

/// The container whose log is asked: `?container=`, else the pod's only container.
fn container_name(pod: &Value, name: &str, asked: &str) -> Result<String, ApiError> {
    let names: Vec<&str> = ["/spec/initContainers", "/spec/containers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let app: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    if asked.is_empty() {
        return match app.as_slice() {
            [only] => Ok(only.to_string()),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                app.join(" ")
            ))),
        };
    }
    if !names.contains(&asked) {
        return Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {name}"
        )));
    }
    Ok(asked.to_string())
}

pub async fn pod_log(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let name = ctx.target.name.clone().unwrap_or_default();
    let ns = ctx.target.namespace.clone().unwrap_or_default();
    let pod = get(ctx, "pods", Some(&ns), &name).await?;
    let container = container_name(&pod, &name, ctx.params.str("container"))?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no logs for pod {name:?}: it has not been scheduled to a node yet"
            ))
        })?;
    let node = get(ctx, "nodes", None, node_name).await?;
    let endpoint = KubeletEndpoint::of(&node)?;
    let query: Vec<(&str, &str)> = FORWARDED
        .iter()
        .filter_map(|k| ctx.params.get(k).map(|v| (*k, v)))
        .collect();
    let query = serde_urlencoded::to_string(&query).unwrap_or_default();
    let path = format!("/containerLogs/{ns}/{name}/{container}?{query}");
    proxy(&endpoint, &path, ctx.server.kubelet_tls.get()).await
}

/// Where a node's kubelet API listens (its `daemonEndpoints` port on its first address).
pub(crate) struct KubeletEndpoint {
    /// The address the TLS server name is made of.
    address: String,
    /// `address:port` (IPv6 in brackets).
    host: String,
}

impl KubeletEndpoint {
    /// The endpoint of `node` (a Node object).
    pub(crate) fn of(node: &Value) -> Result<Self, ApiError> {
        let node_name = crate::object::name(node);
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ApiError::bad_request(format!("node {node_name:?} has no kubelet endpoint"))
            })?;
        let addresses = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let address = ["InternalIP", "ExternalIP", "Hostname"]
            .iter()
            .find_map(|kind| {
                addresses
                    .iter()
                    .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
                    .and_then(|a| a.get("address").and_then(Value::as_str))
            })
            .ok_or_else(|| ApiError::bad_request(format!("node {node_name:?} has no address")))?;
        let host = if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        Ok(Self {
            address: address.to_string(),
            host,
        })
    }
}

/// A connection to a kubelet: TLS or, without a client configuration, plain TCP.
pub(crate) trait Connection:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

/// An HTTP/1.0 response from a kubelet: its status code, and the body still to read (it ends
/// when the kubelet closes the connection: no chunked encoding to undo).
pub(crate) type KubeletResponse = (u16, BufReader<Box<dyn Connection>>);

/// One HTTP/1.0 GET of `path` to the kubelet at `endpoint`, over TLS with the apiserver's
/// client certificate when `tls` is set.
pub(crate) async fn kubelet_get(
    endpoint: &KubeletEndpoint,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<KubeletResponse, ApiError> {
    let host = &endpoint.host;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let unavailable =
        |e: std::io::Error| ApiError::internal(format!("Get \"{scheme}://{host}{path}\": {e}"));
    let tcp = tokio::net::TcpStream::connect(host)
        .await
        .map_err(unavailable)?;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Connection> = match tls {
        Some(config) => {
            // The name is not verified (self-signed kubelet certificates); it only has to parse.
            let name = rustls::pki_types::ServerName::try_from(endpoint.address.clone())
                .unwrap_or_else(|_| {
                    rustls::pki_types::ServerName::try_from("kubelet").expect("a DNS name")
                });
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            Box::new(connector.connect(name, tcp).await.map_err(unavailable)?)
        }
        None => Box::new(tcp),
    };
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .map_err(unavailable)?;
    stream.flush().await.map_err(unavailable)?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .await
        .map_err(unavailable)?;
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.map_err(unavailable)?;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    Ok((code, reader))
}

/// Streams a kubelet's answer to `path` back as the response.
async fn proxy(
    endpoint: &KubeletEndpoint,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Response, ApiError> {
    let host = &endpoint.host;
    let (code, reader) = kubelet_get(endpoint, path, tls).await?;
    if code != 200 {
        let mut body = String::new();
        let _ = reader.take(64 << 10).read_to_string(&mut body).await;
        // A kubelet refusing the apiserver's credential answers a `Status`: pass its message.
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|s| s.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        if code == 401 || code == 403 {
            return Err(ApiError::bad_request(format!(
                "the kubelet at {host} refused the apiserver's client certificate: {message}"
            )));
        }
        return Err(ApiError::bad_request(message));
    }
    let chunks = futures::stream::unfold(reader, |mut reader| async move {
        let mut buf = vec![0u8; 16 << 10];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    });
    let body = Body::from_stream(chunks);
    Ok(Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(body)
        .expect("static headers are valid"))
}
