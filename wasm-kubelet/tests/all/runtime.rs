//! The wasmtime runtime on the example guests: exits, traps, limits, stopping, caching.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmkube_kubelet::runtime::logs::{read_all, LogFile, DEFAULT_MAX_LOG_BYTES};
use wasmkube_kubelet::runtime::{ContainerSpec, Exit, Runtime, RuntimeError, EXIT_KILLED};

use crate::guests::{self, Target};

/// The runtime over a compiled-code cache shared by the tests (keys include engine settings).
fn runtime() -> Runtime {
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasmkube-compiled");
    Runtime::new(&cache).expect("runtime")
}

async fn run(name: &str, target: Target, spec: ContainerSpec) -> (Exit, Vec<String>) {
    let rt = runtime();
    let path = guests::path(name, target);
    let program = rt
        .load(&guests::digest(&path), &path)
        .await
        .expect("guest loads");
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("0.log");
    let log = LogFile::create(&log_path, DEFAULT_MAX_LOG_BYTES).unwrap();
    let exit = rt
        .run(&program, &spec, &log, &CancellationToken::new())
        .await;
    let lines = read_all(&log_path)
        .unwrap()
        .into_iter()
        .map(|r| r.text)
        .collect();
    (exit, lines)
}

fn spec(argv: &[&str]) -> ContainerSpec {
    ContainerSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn hello_runs_as_p1_module_and_p2_component_with_only_the_given_argv_and_env() {
    for target in [Target::P1, Target::P2] {
        let mut s = spec(&["hello", "kube"]);
        s.env = vec![("GREETING".into(), "hi".into())];
        let (exit, lines) = run("hello", target, s).await;
        assert_eq!(exit.exit_code, 0, "{target:?}: {exit:?}");
        assert_eq!(exit.reason, "Completed");
        assert_eq!(
            lines,
            vec![
                "hello, kube!",
                "env GREETING=hi",
                "hello wrote to stderr too"
            ],
            "{target:?}: no host env (PATH, HOME) leaks"
        );
    }
}

#[tokio::test]
async fn exit_codes_and_traps_are_reported() {
    for target in [Target::P1, Target::P2] {
        let (exit, _) = run("exit-nonzero", target, spec(&["exit-nonzero", "7"])).await;
        // Rust's std on wasip2 reports only success or failure (`wasi:cli/exit.exit(result)`).
        let code = match target {
            Target::P1 => 7,
            Target::P2 => 1,
        };
        assert_eq!((exit.exit_code, exit.reason), (code, "Error"), "{target:?}");

        let (exit, lines) = run("trap", target, spec(&["trap"])).await;
        assert_eq!(exit.reason, "Error", "{target:?}");
        let msg = exit.message.unwrap_or_default();
        assert!(msg.contains("unreachable"), "{target:?}: {msg}");
        assert_eq!(lines, vec!["about to trap"]);

        let (exit, _) = run("stack-overflow", target, spec(&["stack-overflow"])).await;
        let msg = exit.message.unwrap_or_default();
        assert!(msg.contains("call stack exhausted"), "{target:?}: {msg}");
    }
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_oom_killed() {
    for target in [Target::P1, Target::P2] {
        let mut s = spec(&["memory-hog"]);
        s.memory_limit = Some(16 << 20);
        let (exit, lines) = run("memory-hog", target, s).await;
        assert_eq!(exit.reason, "OOMKilled", "{target:?}: {exit:?}");
        assert!(lines.len() >= 5, "it ran until the limit: {lines:?}");
    }
}

#[tokio::test]
async fn a_cpu_bound_infinite_loop_stops_when_asked() {
    let rt = runtime();
    for target in [Target::P1, Target::P2] {
        let path = guests::path("infinite-loop", target);
        let program = rt.load(&guests::digest(&path), &path).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(&dir.path().join("0.log"), DEFAULT_MAX_LOG_BYTES).unwrap();
        let stop = CancellationToken::new();
        let task = {
            let (rt, stop, log) = (rt.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                rt.run(&program, &spec(&["infinite-loop"]), &log, &stop)
                    .await
            })
        };
        // It is spinning once it has printed.
        let log_path = dir.path().join("0.log");
        let started = Instant::now();
        while read_all(&log_path).unwrap().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "never started");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let asked = Instant::now();
        stop.cancel();
        let exit = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stopped within 2 s")
            .unwrap();
        assert_eq!(exit.exit_code, EXIT_KILLED);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
}

#[tokio::test]
async fn invalid_bytes_are_refused_with_the_validation_message() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0\x01\x05garbage").unwrap();
    let err = rt.load("sha256:bad", &bad).await.err().expect("refused");
    assert!(matches!(err, RuntimeError::Invalid(_)), "{err}");
    std::fs::write(&bad, b"hello").unwrap();
    assert!(matches!(
        rt.load("sha256:bad2", &bad).await,
        Err(RuntimeError::Invalid(_))
    ));
}

#[tokio::test]
async fn compiled_code_is_cached_on_disk_by_digest_and_engine() {
    let dir = tempfile::tempdir().unwrap();
    let path = guests::path("hello", Target::P1);
    let digest = guests::digest(&path);
    let first = Runtime::new(dir.path()).unwrap();
    let t = Instant::now();
    first.load(&digest, &path).await.unwrap();
    let compile = t.elapsed();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one compiled artifact");
    // A new runtime (a restarted kubelet) deserializes instead of compiling.
    let second = Runtime::new(dir.path()).unwrap();
    let t = Instant::now();
    second.load(&digest, &path).await.unwrap();
    let cached = t.elapsed();
    assert!(cached < compile, "cached {cached:?} vs compile {compile:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_slows_a_busy_guest_in_proportion() {
    // A fixed amount of busy work: count down from N, then return.
    let wat = r#"(module
      (memory (export "memory") 1)
      (func (export "_start") (local $i i64)
        (local.set $i (i64.const 300000000))
        (block $done (loop $spin
          (br_if $done (i64.eqz (local.get $i)))
          (local.set $i (i64.sub (local.get $i) (i64.const 1)))
          (br $spin)))))"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.wasm");
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    let rt = runtime();
    let program = rt.load(&guests::digest(&path), &path).await.unwrap();
    let log = LogFile::create(&dir.path().join("0.log"), DEFAULT_MAX_LOG_BYTES).unwrap();
    let mut elapsed = Vec::new();
    for cpu in [None, Some(250)] {
        let spec = ContainerSpec {
            argv: vec!["busy".into()],
            cpu_millis: cpu,
            ..Default::default()
        };
        let t = Instant::now();
        let exit = rt
            .run(&program, &spec, &log, &CancellationToken::new())
            .await;
        assert_eq!(exit.exit_code, 0);
        elapsed.push(t.elapsed());
    }
    let ratio = elapsed[1].as_secs_f64() / elapsed[0].as_secs_f64();
    println!("cpu 250m: {ratio:.1}x slower ({elapsed:?})");
    assert!(
        elapsed[0] > Duration::from_millis(50),
        "enough work to measure: {elapsed:?}"
    );
    // Slices are wall-clock time and the guest sleeps 3x what it ran; on a loaded machine the
    // unthrottled run is slowed too, so only a clear slowdown is asserted, not exactly 4x.
    assert!(
        ratio > 1.5,
        "250m runs several times slower: {elapsed:?} ({ratio:.1}x)"
    );
}
