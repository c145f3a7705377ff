//! Pod-start tracing: the `--trace-file` writer and `wasmkube trace pod`.
//!
//! The apiserver, scheduler and kubelet emit one DEBUG event at the target
//! [`TARGET`] for each stage a pod passes on its way to running, each with the fields
//! `stage` (one of [`STAGES`]), `pod_uid` and `pod` (`namespace/name`), plus a few that
//! depend on the stage (`node`, `container`, `ip`, `cached`). `--trace-file FILE` appends
//! exactly these events to FILE as JSON lines with an RFC 3339 `time` in microseconds;
//! `wasmkube trace pod` reads such files and prints one pod's path with timings.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use jiff::Timestamp;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::Context as LayerContext;

/// The target every pod-start event is emitted at.
pub const TARGET: &str = "wasmkube::trace";

/// The stages, in the order a pod normally passes them, each with what it means.
pub const STAGES: &[(&str, &str)] = &[
    (
        "apiserver.create",
        "the create was admitted and validated, uid assigned; the store write starts",
    ),
    ("apiserver.stored", "the store committed the new pod"),
    (
        "scheduler.queued",
        "the scheduler's watch saw the pending pod and (re)queued it",
    ),
    (
        "scheduler.scheduled",
        "a scheduling cycle (filter, score, reserve) chose `node`",
    ),
    (
        "apiserver.bound",
        "the apiserver wrote the binding (spec.nodeName)",
    ),
    (
        "scheduler.bound",
        "the scheduler's binding call returned success",
    ),
    ("kubelet.seen", "the kubelet's watch saw the pod on `node`"),
    (
        "kubelet.network_ready",
        "the kubelet assigned the pod's address `ip`",
    ),
    (
        "kubelet.volumes_ready",
        "the volumes of `container` are set up",
    ),
    (
        "kubelet.image_ready",
        "the module of `container` is in the store (`cached`: no pull was needed)",
    ),
    (
        "kubelet.module_ready",
        "the module of `container` is compiled (or was in the compile cache)",
    ),
    (
        "kubelet.started",
        "`container` is handed to the runtime (Started)",
    ),
    ("kubelet.status_pending", "a status write set phase Pending"),
    ("kubelet.status_running", "a status write set phase Running"),
    (
        "kubelet.status_succeeded",
        "a status write set phase Succeeded",
    ),
    ("kubelet.status_failed", "a status write set phase Failed"),
];

/// The statuses that end a pod's start: running, or already run to its end.
const STARTED_STATUSES: &[&str] = &[
    "kubelet.status_running",
    "kubelet.status_succeeded",
    "kubelet.status_failed",
];

/// The filter of the trace file: events at exactly [`TARGET`] (a target filter would also take
/// every module below a same-named module path), DEBUG or above.
pub fn trace_events() -> FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    fn is_trace_event(m: &tracing::Metadata<'_>) -> bool {
        m.target() == TARGET && *m.level() <= tracing::Level::DEBUG
    }
    FilterFn::new(is_trace_event as fn(&tracing::Metadata<'_>) -> bool)
        .with_max_level_hint(tracing::Level::DEBUG)
}

/// A `tracing` layer that appends every event it sees as one JSON line to a file; installed
/// with [`trace_events`] by `--trace-file`.
pub struct TraceFile {
    file: Mutex<File>,
}

impl TraceFile {
    /// Opens `path` for appending (several processes may share one file).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the trace file {}", path.display()))?;
        Ok(TraceFile {
            file: Mutex::new(file),
        })
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TraceFile {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut fields = Map::new();
        fields.insert(
            "time".into(),
            Value::String(format!("{:.6}", Timestamp::now())),
        );
        event.record(&mut JsonFields(&mut fields));
        let mut line = Value::Object(fields).to_string();
        line.push('\n');
        // One write per line: appends from several threads or processes do not interleave.
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Collects an event's fields into a JSON object.
struct JsonFields<'a>(&'a mut Map<String, Value>);

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

/// `wasmkube trace`.
#[derive(clap::Subcommand)]
pub enum Trace {
    /// Print one pod's start (apiserver, scheduler, kubelet) with timings, from the JSON
    /// lines written by `--trace-file`.
    Pod(PodArgs),
}

/// Flags of `wasmkube trace pod`.
#[derive(clap::Args)]
pub struct PodArgs {
    /// The pod's name.
    pub name: String,
    /// The pod's namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// A file written by `--trace-file` (repeatable: one per process of a cluster).
    #[arg(long = "log", required = true, value_name = "FILE")]
    pub logs: Vec<PathBuf>,
    /// The pod's uid, for a pod that is gone; without it the uid is read from the apiserver.
    #[arg(long)]
    pub uid: Option<String>,
    /// Kubeconfig of the apiserver to look the pod up in [default: DIR/kubeconfig of `up`].
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// Runs `wasmkube trace ...`.
pub async fn run(cmd: Trace) -> anyhow::Result<()> {
    let Trace::Pod(args) = cmd;
    let mut text = String::new();
    for path in &args.logs {
        text.push_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading the trace file {}", path.display()))?,
        );
        text.push('\n');
    }
    let events = parse(&text);
    let pod = format!("{}/{}", args.namespace, args.name);
    let uid = match args.uid {
        Some(uid) => uid,
        None => lookup_uid(&args, &events, &pod).await?,
    };
    print!("{}", render(&pod, &uid, &events));
    Ok(())
}

/// The uid of the pod as the apiserver has it now.
async fn lookup_uid(args: &PodArgs, events: &[TraceEvent], pod: &str) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::Pod;
    let path = match &args.kubeconfig {
        Some(p) => p.clone(),
        None => crate::kubeconfig::default_data_dir()?.join("kubeconfig"),
    };
    let client = crate::kubeconfig::client(&path).await?;
    let api: kube::Api<Pod> = kube::Api::namespaced(client, &args.namespace);
    let found = api
        .get_opt(&args.name)
        .await
        .with_context(|| format!("reading pod {pod}"))?;
    match found.and_then(|p| p.metadata.uid) {
        Some(uid) => Ok(uid),
        None => {
            let mut seen: Vec<&str> = Vec::new();
            for e in events.iter().filter(|e| e.pod == pod) {
                if !seen.contains(&e.uid.as_str()) {
                    seen.push(&e.uid);
                }
            }
            let hint = match seen.is_empty() {
                true => "the trace files have no events for it either".to_string(),
                false => format!("uids in the trace files: {}", seen.join(", ")),
            };
            anyhow::bail!("pod {pod} not found; pass --uid UID for a pod that is gone ({hint})")
        }
    }
}

/// One pod-start event read back from a trace file.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    /// When it was emitted.
    pub time: Timestamp,
    /// One of [`STAGES`] (or a newer stage this reader does not know).
    pub stage: String,
    /// The pod's uid.
    pub uid: String,
    /// `namespace/name`.
    pub pod: String,
    /// The other fields, as `key=value`, sorted by key.
    pub extra: BTreeMap<String, String>,
}

/// Reads the pod-start events from JSON lines; lines that are not such events are skipped
/// (a file may be shared with other output or end in a partial line).
pub fn parse(text: &str) -> Vec<TraceEvent> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TraceEvent> {
    let Value::Object(mut fields) = serde_json::from_str::<Value>(line).ok()? else {
        return None;
    };
    let mut take = |key: &str| match fields.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let time = take("time")?.parse().ok()?;
    let stage = take("stage")?;
    let uid = take("pod_uid")?;
    let pod = take("pod").unwrap_or_default();
    let extra = fields
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some((k, s)),
            Value::Null => None,
            v => Some((k, v.to_string())),
        })
        .collect();
    Some(TraceEvent {
        time,
        stage,
        uid,
        pod,
        extra,
    })
}

/// Where a stage sorts among events at the same microsecond: its place in [`STAGES`].
fn stage_rank(stage: &str) -> usize {
    STAGES
        .iter()
        .position(|(s, _)| *s == stage)
        .unwrap_or(STAGES.len())
}

/// The events of the pod `uid` in time order (ties in stage order).
pub fn events_of<'a>(events: &'a [TraceEvent], uid: &str) -> Vec<&'a TraceEvent> {
    let mut mine: Vec<&TraceEvent> = events.iter().filter(|e| e.uid == uid).collect();
    mine.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then_with(|| stage_rank(&a.stage).cmp(&stage_rank(&b.stage)))
    });
    mine
}

/// The stages a started pod passes that none of the pod's events show.
pub fn missing(events: &[&TraceEvent]) -> Vec<&'static str> {
    let has = |stage: &str| events.iter().any(|e| e.stage == stage);
    let mut gone: Vec<&'static str> = STAGES
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| !s.starts_with("kubelet.status_") && !has(s))
        .collect();
    if !STARTED_STATUSES.iter().any(|s| has(s)) {
        gone.push("kubelet.status_running");
    }
    gone
}

/// The report `wasmkube trace pod` prints: each event with the time since the first and since
/// the previous one, then the stages that are missing.
pub fn render(pod: &str, uid: &str, events: &[TraceEvent]) -> String {
    use std::fmt::Write as _;
    let mine = events_of(events, uid);
    let mut out = format!("pod {pod} (uid {uid})\n");
    let Some(first) = mine.first() else {
        let _ = writeln!(out, "  no trace events for this uid in the trace files");
        return out;
    };
    let ms = |from: Timestamp, to: Timestamp| {
        (to.as_microsecond() - from.as_microsecond()) as f64 / 1000.0
    };
    let mut prev = first.time;
    for e in &mine {
        let extra: Vec<String> = e.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "{:>10.3} ms  +{:<8.3}  {}{}{}",
            ms(first.time, e.time),
            ms(prev, e.time),
            e.stage,
            if extra.is_empty() { "" } else { "  " },
            extra.join(" "),
        );
        prev = e.time;
    }
    for stage in missing(&mine) {
        let _ = writeln!(out, "{:>10} ms  {:<9}  {stage}", "-", "missing");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(time: &str, stage: &str, uid: &str, extra: &str) -> String {
        format!(
            r#"{{"time":"{time}","stage":"{stage}","pod_uid":"{uid}","pod":"default/hello"{extra}}}"#
        )
    }

    #[test]
    fn render_orders_events_by_time_and_shows_missing_stages() {
        let u = "1b2c";
        let log = [
            line("2026-11-29T15:00:00.001500Z", "scheduler.queued", u, ""),
            line("2026-11-29T15:00:00.000000Z", "apiserver.create", u, ""),
            "not json at all".to_string(),
            line("2026-11-29T15:00:00.000400Z", "apiserver.stored", u, ""),
            line(
                "2026-11-29T15:00:00.000100Z",
                "apiserver.create",
                "other-uid",
                "",
            ),
            line(
                "2026-11-29T15:00:00.003000Z",
                "scheduler.scheduled",
                u,
                r#","node":"n1""#,
            ),
            line(
                "2026-11-29T15:00:00.010000Z",
                "kubelet.image_ready",
                u,
                r#","container":"main","cached":true"#,
            ),
            r#"{"time":"2026-11-29T15:00:00.0","stage":"kubelet.seen""#.to_string(),
        ]
        .join("\n");
        let events = parse(&log);
        assert_eq!(events.len(), 6, "the bad and partial lines are skipped");
        let out = render("default/hello", u, &events);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "pod default/hello (uid 1b2c)");
        assert_eq!(lines[1], "     0.000 ms  +0.000     apiserver.create");
        assert_eq!(lines[2], "     0.400 ms  +0.400     apiserver.stored");
        assert_eq!(lines[3], "     1.500 ms  +1.100     scheduler.queued");
        assert_eq!(
            lines[4],
            "     3.000 ms  +1.500     scheduler.scheduled  node=n1"
        );
        assert_eq!(
            lines[5],
            "    10.000 ms  +7.000     kubelet.image_ready  cached=true container=main"
        );
        let missing: Vec<&str> = lines[6..]
            .iter()
            .map(|l| {
                assert!(l.contains("missing"), "{l}");
                l.rsplit(' ').next().unwrap()
            })
            .collect();
        assert_eq!(
            missing,
            [
                "apiserver.bound",
                "scheduler.bound",
                "kubelet.seen",
                "kubelet.network_ready",
                "kubelet.volumes_ready",
                "kubelet.module_ready",
                "kubelet.started",
                "kubelet.status_running",
            ]
        );
    }

    #[test]
    fn a_terminal_status_counts_as_started_and_unknown_uids_say_so() {
        let log = line("2026-11-29T15:00:00Z", "kubelet.status_succeeded", "u", "");
        let events = parse(&log);
        assert!(!missing(&events_of(&events, "u")).contains(&"kubelet.status_running"));
        let out = render("default/hello", "nope", &events);
        assert!(out.contains("no trace events for this uid"), "{out}");
    }

    #[test]
    fn the_trace_file_layer_writes_json_lines_the_parser_reads() {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::Layer as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let layer = TraceFile::open(&path).unwrap().with_filter(trace_events());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "wasmkube::trace", stage = "kubelet.seen",
                pod_uid = "u1", pod = %format_args!("{}/{}", "ns", "p"), node = "n1");
            tracing::info!("not a trace event");
            tracing::trace!(target: "wasmkube::trace", stage = "too verbose", pod_uid = "u1");
            tracing::debug!(target: "wasmkube::trace", stage = "kubelet.started",
                pod_uid = "u1", pod = "ns/p", cached = false);
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "only trace events: {text}");
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let time = first["time"].as_str().unwrap();
        // RFC 3339 in UTC with microseconds.
        assert_eq!(time.len(), "2026-11-29T15:00:00.000000Z".len(), "{time}");
        let events = parse(&text);
        assert_eq!(events[0].stage, "kubelet.seen");
        assert_eq!(events[0].pod, "ns/p");
        assert_eq!(events[0].extra["node"], "n1");
        assert_eq!(events[1].extra["cached"], "false");
        assert!(events[0].time <= events[1].time);
    }
}
