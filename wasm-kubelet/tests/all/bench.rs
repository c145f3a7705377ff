//! `bench startup` end to end on a small number of pods (the CLI runs it with 200).

use crate::cluster::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_bench_reports_percentiles_and_the_ratio_line() {
    let (client, _server, dir) = connect().await;
    let pods: usize = std::env::var("WASMKUBE_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let figures = wasmkube_kubelet::bench::startup(client, dir.path(), pods)
        .await
        .expect("bench runs");
    let report = figures.report();
    println!("{report}");
    let last = report.lines().last().unwrap();
    assert!(
        last.starts_with("p99: ") && last.contains(" ms, ratio: "),
        "{last}"
    );
    assert!(figures.p50_ms > 0.0 && figures.bare_p50_ms > 0.0);
}
