//! `wasmkube up --trace-file` records a pod's start; `wasmkube trace pod` prints it with timings.

use std::process::Command;

use crate::support::{eventually, example_guest, Cluster};

/// Every stage a command pod passes on one node, in the order that causality fixes (pairs
/// that race, such as `apiserver.stored` against the scheduler's watch, are checked apart).
const CHAIN: &[&str] = &[
    "apiserver.create",
    "scheduler.queued",
    "scheduler.scheduled",
    "kubelet.seen",
    "kubelet.network_ready",
    "kubelet.volumes_ready",
    "kubelet.image_ready",
    "kubelet.module_ready",
    "kubelet.started",
    "kubelet.status_succeeded",
];

/// `(milliseconds since the first event, stage)` of each event line of a `trace pod` report.
fn stages(report: &str) -> Vec<(f64, String)> {
    report
        .lines()
        .skip(1)
        .filter(|l| !l.contains("missing"))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(words.get(1), Some(&"ms"), "an event line: {l}");
            (
                words[0].parse().expect("milliseconds"),
                words[3].to_string(),
            )
        })
        .collect()
}

fn trace_pod(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(["trace", "pod"])
        .args(args)
        .output()
        .expect("run wasmkube trace pod")
}

#[test]
fn trace_pod_prints_every_start_stage_of_a_pod_in_order() {
    let traces = tempfile::tempdir().expect("temp dir");
    let file = traces.path().join("trace.jsonl");
    let c = Cluster::up_with(&["--trace-file", file.to_str().expect("utf-8 path")]);
    let wasm = example_guest("hello");
    c.import(&wasm, "wasmkube.local/hello:v1");
    c.ok(&[
        "run",
        "hello",
        "--image=wasmkube.local/hello:v1",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "world",
    ]);
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/hello",
        "--timeout=60s",
    ]);
    let uid = c.ok(&["get", "pod", "hello", "-o", "jsonpath={.metadata.uid}"]);
    let args = [
        "hello".as_ref(),
        "-n".as_ref(),
        "default".as_ref(),
        "--log".as_ref(),
        file.as_os_str(),
        "--kubeconfig".as_ref(),
        c.kubeconfig.as_os_str(),
    ];
    // The kubelet records its last status write once the apiserver has answered it, which
    // may be just after kubectl saw the phase.
    let report = eventually(30, "the trace of the Succeeded status write", || {
        let out = trace_pod(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = String::from_utf8_lossy(&out.stdout).to_string();
        out.contains("kubelet.status_succeeded").then_some(out)
    });
    assert!(
        report.starts_with(&format!("pod default/hello (uid {uid})\n")),
        "{report}"
    );
    assert!(
        !report.contains("missing"),
        "no stage is missing:\n{report}"
    );
    let events = stages(&report);
    // The report is in time order, starting at zero.
    assert_eq!(events[0].0, 0.0, "{report}");
    assert!(
        events.windows(2).all(|w| w[0].0 <= w[1].0),
        "times never decrease:\n{report}"
    );
    let first = |stage: &str| {
        events
            .iter()
            .find(|(_, s)| s == stage)
            .unwrap_or_else(|| panic!("{stage} in the report:\n{report}"))
            .0
    };
    for pair in CHAIN.windows(2) {
        assert!(
            first(pair[0]) <= first(pair[1]),
            "{} before {}:\n{report}",
            pair[0],
            pair[1]
        );
    }
    assert!(first("apiserver.create") <= first("apiserver.stored"));
    assert!(first("scheduler.scheduled") <= first("apiserver.bound"));
    assert!(first("apiserver.bound") <= first("scheduler.bound"));

    // Once the pod is gone the apiserver cannot name its uid: the error points at --uid,
    // which prints the same trace.
    c.ok(&["delete", "pod", "hello", "--wait=true"]);
    let out = trace_pod(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pod default/hello not found; pass --uid UID") && err.contains(&uid),
        "{err}"
    );
    let mut with_uid = args.to_vec();
    with_uid.extend::<[&std::ffi::OsStr; 2]>(["--uid".as_ref(), uid.as_ref()]);
    let out = trace_pod(&with_uid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = String::from_utf8_lossy(&out.stdout);
    assert!(again.starts_with(&report), "{again}");
}
