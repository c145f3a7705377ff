//! wasmkube on etcd, end to end: the `wasmkube apiserver --store etcd://...` binary against a
//! real etcd process that these tests start (on free ports, with a temp data dir) and kill.
//!
//! They need the `etcd` binary (Debian's etcd-server, installed by scripts/setup). They run when
//! `WASMKUBE_TEST_ETCD` is set (scripts/test sets it) or under CI (`CI` set, where a missing
//! `etcd` fails them); otherwise they are skipped with a printed reason.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

/// The `etcd` binary, or None (with the reason printed) when these tests are skipped.
pub(crate) fn etcd_binary(test: &str) -> Option<PathBuf> {
    let wanted = std::env::var_os("WASMKUBE_TEST_ETCD").is_some_and(|v| !v.is_empty())
        || std::env::var_os("CI").is_some();
    if !wanted {
        eprintln!(
            "skipping {test}: WASMKUBE_TEST_ETCD is not set (scripts/test starts etcd and sets it)"
        );
        return None;
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None => panic!("{test}: no `etcd` binary on PATH (scripts/setup installs etcd-server)"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One etcd member on loopback; killed when dropped.
pub(crate) struct Etcd {
    bin: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    pub(crate) fn start(bin: PathBuf) -> Self {
        let mut etcd = Etcd {
            bin,
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("log file");
        let child = Command::new(&self.bin)
            .args(["--name", "e2e", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("e2e={peer}")])
            .args(["--max-request-bytes", "10485760"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    /// Polls etcd's `/health` (served on the client port) until it reports healthy.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = std::net::TcpStream::connect(("127.0.0.1", self.client_port))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")?;
                    let mut body = String::new();
                    s.read_to_string(&mut body)?;
                    Ok(body.contains("\"health\":\"true\""))
                })
                .unwrap_or(false);
            if healthy {
                return;
            }
            let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: etcd gets no chance to do anything more.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same data dir and ports.
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `wasmkube apiserver` process on a free port over `store`; killed when dropped.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(store: &str) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["apiserver", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--store", store])
            .env("WASMKUBE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wasmkube");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("wasmkube exited before listening")
                .expect("read stdout");
            if line.contains("listening on ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Server { child, dir }
    }

    /// A kube-rs client from the kubeconfig the apiserver wrote (its CA and admin token). It
    /// does not retry 503s by itself, so that the tests see them.
    async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(self.dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("client config");
        config.default_retry = false;
        kube::Client::try_from(config).expect("client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"k": "v"},
    }))
    .expect("valid configmap")
}

/// What a kube-rs watcher has seen, fed by a background task.
#[derive(Default)]
struct Seen {
    names: BTreeSet<String>,
    /// Watch (re)starts from a full list: 1 means the watcher always resumed from its version.
    inits: usize,
    init_done: bool,
    errors: usize,
}

fn spawn_watcher(api: Api<ConfigMap>) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(item) = stream.next().await {
            let mut s = out.lock().expect("lock");
            match item {
                Ok(Event::Init) => s.inits += 1,
                Ok(Event::InitDone) => s.init_done = true,
                Ok(Event::Apply(m) | Event::InitApply(m)) => {
                    s.names.insert(m.metadata.name.unwrap_or_default());
                }
                Ok(Event::Delete(_)) => {}
                Err(_) => s.errors += 1,
            }
        }
    });
    seen
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apiservers_on_one_etcd_serve_one_cluster() {
    let Some(bin) = etcd_binary("two_apiservers_on_one_etcd_serve_one_cluster") else {
        return;
    };
    let etcd = Etcd::start(bin);
    let spec = format!("etcd://{}", etcd.endpoint());
    let (one, two) = (Server::start(&spec), Server::start(&spec));
    let api_one: Api<ConfigMap> = Api::namespaced(one.client().await, "default");
    let api_two: Api<ConfigMap> = Api::namespaced(two.client().await, "default");

    // A watcher on the second apiserver sees what is written through the first.
    let seen = spawn_watcher(api_two.clone());
    wait_for(
        "the watcher's initial list",
        Duration::from_secs(20),
        || seen.lock().expect("lock").init_done,
    )
    .await;
    let created = api_one
        .create(&PostParams::default(), &cm("from-one"))
        .await
        .expect("create through one");
    wait_for(
        "the second apiserver's watch event",
        Duration::from_secs(20),
        || seen.lock().expect("lock").names.contains("from-one"),
    )
    .await;

    // An update through the second is read back through the first, at the same version.
    let patched = api_two
        .patch(
            "from-one",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "v2"}})),
        )
        .await
        .expect("patch through two");
    let got = api_one.get("from-one").await.expect("get through one");
    assert_eq!(
        got.data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map(String::as_str),
        Some("v2")
    );
    assert_eq!(
        got.metadata.resource_version,
        patched.metadata.resource_version
    );
    // The first's stale copy conflicts.
    let err = api_one
        .replace("from-one", &PostParams::default(), &created)
        .await
        .expect_err("stale update must conflict");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err:?}"
    );
    // Lists agree.
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|m| m.metadata.name)
            .collect()
    };
    assert_eq!(
        names(api_one.list(&ListParams::default()).await.expect("list")),
        names(api_two.list(&ListParams::default()).await.expect("list"))
    );
}

#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<String>,
    /// HTTP status of each failed create.
    failures: Vec<u16>,
    /// Failures that were not API errors (transport, timeouts...).
    other: Vec<String>,
    /// Longest time a failed create took.
    slowest_failure: Duration,
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_sigkill_during_writes_gives_503s_and_loses_no_acknowledged_write() {
    let Some(bin) =
        etcd_binary("etcd_sigkill_during_writes_gives_503s_and_loses_no_acknowledged_write")
    else {
        return;
    };
    let mut etcd = Etcd::start(bin);
    let server = Server::start(&format!("etcd://{}", etcd.endpoint()));
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let seen = spawn_watcher(api.clone());
    wait_for(
        "the watcher's initial list",
        Duration::from_secs(20),
        || seen.lock().expect("lock").init_done,
    )
    .await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (api, outcomes, stop) = (api.clone(), outcomes.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{w}-{i}");
                i += 1;
                let started = Instant::now();
                let result = api.create(&PostParams::default(), &cm(&name)).await;
                let failed = {
                    let mut o = outcomes.lock().expect("lock");
                    match result {
                        Ok(_) => {
                            o.acked.insert(name);
                            false
                        }
                        Err(err) => {
                            o.slowest_failure = o.slowest_failure.max(started.elapsed());
                            match err {
                                kube::Error::Api(s) => o.failures.push(s.code),
                                other => o.other.push(other.to_string()),
                            }
                            true
                        }
                    }
                };
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let acked = || outcomes.lock().expect("lock").acked.len();
    wait_for("200 acknowledged creates", Duration::from_secs(60), || {
        acked() >= 200
    })
    .await;

    // etcd dies mid-stream; writers keep going for a while and must get quick 503s.
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    {
        let o = outcomes.lock().expect("lock");
        eprintln!(
            "while etcd was down: {} failed creates, slowest {:?}",
            o.failures.len(),
            o.slowest_failure
        );
        assert!(
            !o.failures.is_empty(),
            "no create failed while etcd was down"
        );
        assert!(
            o.failures.iter().all(|&code| code == 503),
            "failures while etcd was down must be 503s: {:?}",
            o.failures
        );
        assert!(o.other.is_empty(), "non-API failures: {:?}", o.other);
        assert!(
            o.slowest_failure < Duration::from_secs(6),
            "a failed create took {:?}: clients must not hang",
            o.slowest_failure
        );
    }
    // Reads fail the same way, quickly.
    let started = Instant::now();
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 503, "{s:?}"),
        other => panic!("list while etcd is down: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(6));

    // etcd comes back: the apiserver reconnects and writes flow again.
    etcd.restart();
    let at_restart = acked();
    wait_for(
        "creates to succeed again after etcd restarted",
        Duration::from_secs(60),
        || acked() >= at_restart + 100,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let acked = outcomes.lock().expect("lock").acked.clone();

    // Every acknowledged write is there.
    let present: BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .expect("list after restart")
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );

    // The watcher continued: it has seen every acknowledged create, those from after the
    // restart included, by resuming from its last version rather than relisting.
    wait_for(
        "the watcher to see every acknowledged create",
        Duration::from_secs(60),
        || acked.is_subset(&seen.lock().expect("lock").names),
    )
    .await;
    let s = seen.lock().expect("lock");
    assert!(
        s.errors > 0,
        "the watcher should have seen the outage as errors"
    );
    assert_eq!(s.inits, 1, "the watcher relisted instead of resuming");
}
