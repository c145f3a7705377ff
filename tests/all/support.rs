//! Starting a cluster process and running the real kubectl against it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `wasmkube up` (or `wasmkube apiserver`) process on a temp data dir; killed when dropped.
pub struct Cluster {
    child: Option<Child>,
    /// The subcommand: `up` or `apiserver`.
    command: &'static str,
    /// Flags after `--data-dir` and `--listen` (e.g. `--nodes 2`, `--store etcd://...`).
    extra: Vec<String>,
    /// This cluster's Service CIDR (a /24; its first address is the `kubernetes` Service's).
    pub service_range: String,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Cluster {
    /// Starts `wasmkube up` (the whole cluster) on a free port and waits until it serves.
    pub fn start() -> Self {
        Self::start_command("up", &[])
    }

    /// Starts `wasmkube up` with extra flags, e.g. `--nodes 2` or `--store etcd://...`.
    pub fn up_with(extra: &[&str]) -> Self {
        Self::start_command("up", extra)
    }

    /// Starts `wasmkube apiserver` alone: API tests see no scheduler or kubelet changing their
    /// objects.
    pub fn apiserver() -> Self {
        Self::start_command("apiserver", &[])
    }

    fn start_command(command: &'static str, extra: &[&str]) -> Self {
        // Clusters of one test run share this host's loopback: each gets its own Service range
        // (a /24 of 127.96.0.0/12) and, for `up`, its own pod range (a /16 of 127.128.0.0/9),
        // so their ClusterIP listeners and pod addresses never collide.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + std::process::id() % 61;
        let service_range = format!("127.{}.{}.0/24", 96 + (n / 256) % 16, n % 256);
        let mut ranges = vec![
            "--service-cluster-ip-range".to_string(),
            service_range.clone(),
        ];
        if command == "up" {
            ranges.push("--cluster-cidr".into());
            ranges.push(format!("127.{}.0.0/16", 128 + n % 128));
        }
        let extra: Vec<String> = ranges
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = dir.path().join("kubectl-cache");
        let mut c = Cluster {
            child: None,
            command,
            extra,
            service_range,
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
            url: String::new(),
            cache,
        };
        c.spawn("127.0.0.1:0");
        c
    }

    fn spawn(&mut self, listen: &str) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args([self.command, "--data-dir"])
            .arg(self.dir.path())
            .args(["--listen", listen])
            .args(&self.extra)
            .env("WASMKUBE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wasmkube");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("wasmkube exited before listening")
                .expect("read stdout");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().to_string();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.url = url;
        self.child = Some(child);
    }

    /// The `host:port` the apiserver listens on.
    pub fn addr(&self) -> String {
        self.url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string()
    }

    /// SIGKILL: no chance to flush anything that was not already durable.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        c.wait().expect("wait")
    }

    /// Starts again on the same data dir and port.
    pub fn restart(&mut self) {
        let addr = self.addr();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port may linger briefly after a kill.
            if std::net::TcpListener::bind(&addr).is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn(&addr);
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Runs kubectl with `input` on stdin.
    pub fn kubectl_in(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        check_ok(args, self.kubectl(args))
    }

    /// Like [`ok`] with stdin.
    pub fn ok_in(&self, args: &[&str], input: &str) -> String {
        check_ok(args, self.kubectl_in(args, input))
    }

    /// Runs kubectl, asserts failure and returns stderr.
    pub fn err(&self, args: &[&str]) -> String {
        check_err(args, self.kubectl(args))
    }

    pub fn err_in(&self, args: &[&str], input: &str) -> String {
        check_err(args, self.kubectl_in(args, input))
    }

    /// Imports the wasm file `wasm` as `image` into the cluster's node(s) (`wasmkube image
    /// import`), for pods with `imagePullPolicy: Never`.
    pub fn import(&self, wasm: &std::path::Path, image: &str) {
        wasmkube(&[
            "image".as_ref(),
            "import".as_ref(),
            wasm.as_os_str(),
            image.as_ref(),
            "--data-dir".as_ref(),
            self.dir.path().as_os_str(),
        ]);
    }

    /// A kube-rs client for this cluster, from the kubeconfig `up` wrote (CA + admin token).
    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("client config");
        kube::Client::try_from(config).expect("client")
    }

    /// `curl` against the apiserver with its CA, returning (HTTP status, body).
    pub fn curl(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let ca = self.dir.path().join("pki/ca.crt");
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(&ca)
            .args(extra)
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

fn check_ok(args: &[&str], out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn check_err(args: &[&str], out: Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl {args:?} should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the `wasmkube` binary with `args`, asserts success and returns stdout.
pub fn wasmkube(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(args)
        .output()
        .expect("run wasmkube");
    assert!(
        out.status.success(),
        "wasmkube {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Polls `f` every 200 ms until it returns `Some`, or panics with `what` after `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A real `docker-registry` (Debian package) on a free loopback port with its storage in a
/// temp dir; killed when dropped.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.path().join("config.yml");
        let root = dir.path().join("storage");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                root.display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (scripts/setup installs it)");
        let addr = format!("127.0.0.1:{port}");
        eventually(20, "docker-registry listening", || {
            std::net::TcpStream::connect(&addr).ok()
        });
        Self {
            addr,
            child,
            _dir: dir,
        }
    }

    /// Pushes an example guest as `<addr>/wasmkube/<repo>:<tag>` and returns that reference.
    pub fn push_example(&self, guest: &str, repo: &str, tag: &str) -> String {
        let reference = format!("{}/wasmkube/{repo}:{tag}", self.addr);
        let wasm = example_guest(guest);
        wasmkube(&["push".as_ref(), wasm.as_os_str(), reference.as_ref()]);
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An example guest (examples/guests) built for wasm32-wasip1, building them on first use.
pub fn example_guest(name: &str) -> PathBuf {
    example_build("wasm32-wasip1").join(format!("{name}.wasm"))
}

/// A file of the examples built for wasm32-wasip2 (components, e.g. `http_hello.wasm`).
pub fn example_component(file: &str) -> PathBuf {
    example_build("wasm32-wasip2").join(file)
}

/// The release dir of the examples workspace built for `target`, building it on first use.
fn example_build(target: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(&target) {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .args(["build", "--release", "--target", target, "--target-dir"])
            .arg(dir.join("target"))
            .output()
            .expect("run cargo for the example guests");
        assert!(
            out.status.success(),
            "building the example guests for {target} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        built.push(target);
    }
    dir.join("target").join(target).join("release")
}
