//! Container probes (`startupProbe`, `readinessProbe`, `livenessProbe`) with upstream's
//! semantics: `httpGet` (a status in 200..400 passes) and `tcpSocket` (a connection passes)
//! against the pod's address, run every `periodSeconds` after `initialDelaySeconds`, each
//! bounded by `timeoutSeconds`, flipping after `successThreshold` / `failureThreshold`
//! consecutive results. `exec` probes need a shell a wasm guest does not have: they are refused.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe as ProbeSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `startupProbe`: the others wait for it; failing it restarts the container.
    Startup,
    /// `readinessProbe`: decides `ready`.
    Readiness,
    /// `livenessProbe`: failing it restarts the container.
    Liveness,
}

impl Kind {
    /// As upstream names it in events (`Readiness probe failed: …`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "Startup",
            Self::Readiness => "Readiness",
            Self::Liveness => "Liveness",
        }
    }
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `httpGet`: GET `path` on `port` (plain HTTP).
    Http {
        /// The port (named ports resolved).
        port: u16,
        /// The request path.
        path: String,
    },
    /// `tcpSocket`: open a connection to `port`.
    Tcp {
        /// The port (named ports resolved).
        port: u16,
    },
}

/// One probe of a container, with upstream's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Which probe.
    pub kind: Kind,
    /// What it does.
    pub action: Action,
    /// `initialDelaySeconds` (default 0).
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10).
    pub period: Duration,
    /// `timeoutSeconds` (default 1).
    pub timeout: Duration,
    /// `successThreshold` (default 1; always 1 for liveness and startup).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
}

impl Probe {
    /// The probe of `kind` from its spec, with named ports resolved against `container`'s
    /// ports. `Err` says why it cannot run (an `exec` probe, an unknown port name, https).
    pub fn from_spec(kind: Kind, spec: &ProbeSpec, container: &Container) -> Result<Self, String> {
        let port = |p: &IntOrString| -> Result<u16, String> {
            match p {
                IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                    .and_then(|cp| u16::try_from(cp.container_port).ok())
                    .ok_or_else(|| format!("no containerPort named {name:?}")),
            }
        };
        let action = if let Some(h) = &spec.http_get {
            if h.scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                return Err("httpGet with scheme HTTPS is not supported by wasm pods".into());
            }
            Action::Http {
                port: port(&h.port)?,
                path: h
                    .path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/".into()),
            }
        } else if let Some(t) = &spec.tcp_socket {
            Action::Tcp {
                port: port(&t.port)?,
            }
        } else if spec.exec.is_some() {
            return Err(
                "exec probes are not supported: a wasm sandbox has no shell or \
                        processes to exec; use httpGet or tcpSocket"
                    .into(),
            );
        } else {
            return Err("the probe has no httpGet or tcpSocket handler".into());
        };
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Ok(Self {
            kind,
            action,
            initial_delay: secs(spec.initial_delay_seconds, 0),
            period: secs(spec.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(spec.timeout_seconds, 1).max(Duration::from_secs(1)),
            // Liveness and startup probes must use 1 (validation enforces it upstream).
            success_threshold: match kind {
                Kind::Readiness => count(spec.success_threshold, 1),
                _ => 1,
            },
            failure_threshold: count(spec.failure_threshold, 3),
        })
    }

    /// One attempt against `ip`: `Err` with upstream's wording of the failure.
    pub async fn check(&self, ip: IpAddr) -> Result<(), String> {
        let attempt = async {
            match &self.action {
                Action::Tcp { port } => {
                    let addr = SocketAddr::new(ip, *port);
                    TcpStream::connect(addr)
                        .await
                        .map(drop)
                        .map_err(|e| format!("dial tcp {addr}: connect: {}", os_message(&e)))
                }
                Action::Http { port, path } => http_get(SocketAddr::new(ip, *port), path).await,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(match &self.action {
                Action::Tcp { port } => {
                    format!("dial tcp {}: i/o timeout", SocketAddr::new(ip, *port))
                }
                Action::Http { port, path } => format!(
                    "Get \"http://{}{path}\": context deadline exceeded (Client.Timeout exceeded \
                     while awaiting headers)",
                    SocketAddr::new(ip, *port)
                ),
            }),
        }
    }
}

fn os_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

/// `GET path` over HTTP/1.1; a status in 200..400 passes.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(), String> {
    let url = format!("http://{addr}{path}");
    let mut stream = TcpStream::connect(addr).await.map_err(|e| {
        format!(
            "Get \"{url}\": dial tcp {addr}: connect: {}",
            os_message(&e)
        )
    })?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "Get \"{url}\": malformed HTTP response {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// What the probes of a running container report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The container's readiness changed (`ready` in its status).
    Ready(bool),
    /// The startup probe passed (`started` in its status).
    Started,
    /// A probe failed (event `Unhealthy`: `<Kind> probe failed: <output>`).
    Unhealthy {
        /// Which probe failed.
        kind: Kind,
        /// Why, in upstream's wording.
        output: String,
    },
    /// The liveness or startup probe failed `failureThreshold` times: restart the container
    /// (event `Killing`: `Container <name> failed <kind> probe, will be restarted`).
    Restart {
        /// The probe that failed.
        kind: Kind,
    },
}

/// The probes of one container run.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    /// `startupProbe`.
    pub startup: Option<Probe>,
    /// `readinessProbe`.
    pub readiness: Option<Probe>,
    /// `livenessProbe`.
    pub liveness: Option<Probe>,
}

impl Probes {
    /// Runs the probes against `ip` until `stop`, reporting through `report`.
    pub async fn run(
        self,
        ip: IpAddr,
        report: impl Fn(Report) + Send + Sync,
        stop: CancellationToken,
    ) {
        let report = &report;
        let until_stopped = async {
            if let Some(startup) = &self.startup {
                if !startup_passes(startup, ip, report).await {
                    report(Report::Restart {
                        kind: Kind::Startup,
                    });
                    return;
                }
                report(Report::Started);
            }
            let readiness = async {
                match &self.readiness {
                    Some(p) => readiness_loop(p, ip, report).await,
                    None if self.startup.is_some() => report(Report::Ready(true)),
                    None => {}
                }
            };
            let liveness = async {
                if let Some(p) = &self.liveness {
                    liveness_loop(p, ip, report).await;
                    report(Report::Restart {
                        kind: Kind::Liveness,
                    });
                }
            };
            // Readiness probing goes on forever; the liveness loop ends by asking a restart.
            tokio::select! {
                () = async { readiness.await; std::future::pending::<()>().await } => {}
                () = async { liveness.await; } , if self.liveness.is_some() => {}
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = until_stopped => {}
        }
    }
}

async fn startup_passes(p: &Probe, ip: IpAddr, report: &(impl Fn(Report) + Sync)) -> bool {
    tokio::time::sleep(p.initial_delay).await;
    let mut failures = 0;
    loop {
        match p.check(ip).await {
            Ok(()) => return true,
            Err(output) => {
                failures += 1;
                report(Report::Unhealthy {
                    kind: p.kind,
                    output,
                });
                if failures >= p.failure_threshold {
                    return false;
                }
            }
        }
        tokio::time::sleep(p.period).await;
    }
}

async fn readiness_loop(p: &Probe, ip: IpAddr, report: &(impl Fn(Report) + Sync)) {
    tokio::time::sleep(p.initial_delay).await;
    let (mut ready, mut successes, mut failures) = (false, 0u32, 0u32);
    loop {
        match p.check(ip).await {
            Ok(()) => {
                failures = 0;
                successes = successes.saturating_add(1);
                if !ready && successes >= p.success_threshold {
                    ready = true;
                    report(Report::Ready(true));
                }
            }
            Err(output) => {
                successes = 0;
                failures = failures.saturating_add(1);
                report(Report::Unhealthy {
                    kind: p.kind,
                    output,
                });
                if ready && failures >= p.failure_threshold {
                    ready = false;
                    report(Report::Ready(false));
                }
            }
        }
        tokio::time::sleep(p.period).await;
    }
}

/// Returns when the liveness probe has failed `failureThreshold` times in a row.
async fn liveness_loop(p: &Probe, ip: IpAddr, report: &(impl Fn(Report) + Sync)) {
    tokio::time::sleep(p.initial_delay).await;
    let mut failures = 0;
    loop {
        match p.check(ip).await {
            Ok(()) => failures = 0,
            Err(output) => {
                failures += 1;
                report(Report::Unhealthy {
                    kind: p.kind,
                    output,
                });
                if failures >= p.failure_threshold {
                    return;
                }
            }
        }
        tokio::time::sleep(p.period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "c",
            "ports": [{"name": "http", "containerPort": 8080}],
        }))
        .unwrap()
    }

    fn spec(v: serde_json::Value) -> ProbeSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn probes_take_upstream_defaults_and_resolve_named_ports() {
        let p = Probe::from_spec(
            Kind::Liveness,
            &spec(serde_json::json!({"httpGet": {"port": "http"}})),
            &container(),
        )
        .unwrap();
        assert_eq!(
            p.action,
            Action::Http {
                port: 8080,
                path: "/".into()
            }
        );
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
        let bad = Probe::from_spec(
            Kind::Readiness,
            &spec(serde_json::json!({"tcpSocket": {"port": "nope"}})),
            &container(),
        );
        assert!(bad.unwrap_err().contains("no containerPort named \"nope\""));
    }

    #[test]
    fn exec_probes_are_refused_with_a_reason() {
        let e = Probe::from_spec(
            Kind::Liveness,
            &spec(serde_json::json!({"exec": {"command": ["true"]}})),
            &container(),
        )
        .unwrap_err();
        assert!(e.contains("exec probes are not supported"), "{e}");
    }

    #[tokio::test]
    async fn tcp_and_http_checks_report_upstream_wording() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
                    .await;
            }
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let probe = |action| Probe {
            kind: Kind::Readiness,
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            success_threshold: 1,
            failure_threshold: 1,
        };
        assert!(probe(Action::Tcp { port }).check(ip).await.is_ok());
        let http = probe(Action::Http {
            port,
            path: "/healthz".into(),
        });
        assert_eq!(
            http.check(ip).await.unwrap_err(),
            "HTTP probe failed with statuscode: 503"
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let refused = probe(Action::Tcp { port: closed })
            .check(ip)
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            format!("dial tcp 127.0.0.1:{closed}: connect: connection refused")
        );
    }
}
