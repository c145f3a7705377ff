//! CronJob controller: creates a Job for each scheduled time (upstream `cronjob_controllerv2`),
//! honouring `concurrencyPolicy`, `startingDeadlineSeconds`, `suspend`, `timeZone` and the
//! successful/failed history limits.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::podutil;
use crate::ControllerConfig;

/// Annotation on created Jobs: the time they were scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cronjob {key}: {what}: {source}")]
    Api {
        key: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("cronjob {key}: unknown time zone {zone}: {message}")]
    TimeZone {
        key: String,
        zone: String,
        message: String,
    },
}

/// What a reconcile needs besides the CronJob.
pub struct Ctx {
    client: Client,
    jobs: Store<Job>,
}

/// Runs the CronJob controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let controller = Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    );
    let (jobs, job_events) =
        podutil::informer(Api::<Job>::all(client.clone()), Duration::ZERO, |_, _| {});
    let ctx = Arc::new(Ctx { client, jobs });
    controller
        .watches_stream(job_events, |job| {
            let owner = podutil::controller_ref(&job.metadata).filter(|r| r.kind == "CronJob")?;
            Some(ObjectRef::new(&owner.name).within(&job.namespace().unwrap_or_default()))
        })
        .with_config(Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "cronjob reconcile failed");
            }
        })
        .await;
}

fn error_policy(_cj: Arc<CronJob>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "cronjob");
    Action::requeue(Duration::from_secs(5))
}

/// `Complete` or `Failed`, when the Job has finished.
fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn started(job: &Job) -> Option<jiff::Timestamp> {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = podutil::key(&cj.metadata);
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.uid().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let api_err = |what: &str| {
        let key = key.clone();
        let what = what.to_string();
        move |source| Error::Api { key, what, source }
    };
    let mut jobs: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .filter(|j| podutil::controller_ref(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    jobs.sort_by_key(|j| started(j));

    // History limits: the oldest finished Jobs beyond them go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
        let excess = done
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for job in done.into_iter().take(excess) {
            match jobs_api
                .delete(&job.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(api_err("deleting an old job")(source)),
            }
        }
    }

    let old_status = cj.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let mut active: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j).is_none()).collect();
    if let Some(t) = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max()
    {
        status.last_successful_time = Some(Time(t));
    }

    let tz = match spec.time_zone.as_deref() {
        Some(zone) => jiff::tz::TimeZone::get(zone).map_err(|e| Error::TimeZone {
            key: key.clone(),
            zone: zone.to_string(),
            message: e.to_string(),
        })?,
        None => jiff::tz::TimeZone::system(),
    };
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(message) => {
            // Validation should have refused it; nothing to schedule until it is fixed.
            tracing::warn!(cronjob = %key, %message, "unparseable schedule");
            return Ok(Action::await_change());
        }
    };
    let now = jiff::Timestamp::now();
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    if let Some(sds) = spec.starting_deadline_seconds {
        earliest = earliest.max(now - jiff::SignedDuration::from_secs(sds));
    }
    let due = schedule.most_recent(earliest, now, &tz);
    let next = schedule.next(now, &tz);
    let requeue = next.map(|n| n.duration_since(now).unsigned_abs() + Duration::from_millis(100));

    if let (Some(at), false) = (due, spec.suspend == Some(true)) {
        let name = format!("{}-{}", cj.name_any(), at.as_second().div_euclid(60));
        let exists = jobs.iter().any(|j| j.name_any() == name);
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let blocked = policy == "Forbid" && !active.is_empty();
        if !exists && !blocked {
            if policy == "Replace" {
                for job in active.drain(..) {
                    match jobs_api
                        .delete(&job.name_any(), &DeleteParams::background())
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(source) => return Err(api_err("replacing a running job")(source)),
                    }
                }
            }
            let job = job_for(&cj, &name, at, &tz);
            let created = match jobs_api.create(&PostParams::default(), &job).await {
                Ok(j) => Some(j),
                // Created by an earlier reconcile our cache has not seen yet.
                Err(kube::Error::Api(s)) if s.code == 409 => None,
                Err(source) => return Err(api_err("creating a job")(source)),
            };
            status.last_schedule_time = Some(Time(at));
            let mut refs: Vec<ObjectReference> = active.iter().map(|j| object_ref(j)).collect();
            if let Some(j) = &created {
                refs.push(object_ref(j));
            }
            status.active = (!refs.is_empty()).then_some(refs);
            write_status(&ctx.client, &cj, &status, &old_status)
                .await
                .map_err(api_err("updating status"))?;
            return Ok(requeue.map_or_else(Action::await_change, Action::requeue));
        }
    }
    let refs: Vec<ObjectReference> = active.iter().map(|j| object_ref(j)).collect();
    status.active = (!refs.is_empty()).then_some(refs);
    write_status(&ctx.client, &cj, &status, &old_status)
        .await
        .map_err(api_err("updating status"))?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn object_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The Job for the run scheduled at `at` (upstream `getJobFromTemplate2`).
fn job_for(cj: &CronJob, name: &str, at: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> Job {
    let template = cj.spec.clone().unwrap_or_default().job_template;
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        at.to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![podutil::controller_owner_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

async fn write_status(
    client: &Client,
    cj: &CronJob,
    status: &k8s_openapi::api::batch::v1::CronJobStatus,
    old: &k8s_openapi::api::batch::v1::CronJobStatus,
) -> Result<(), kube::Error> {
    if status == old {
        return Ok(());
    }
    let api: Api<CronJob> = Api::namespaced(client.clone(), &cj.namespace().unwrap_or_default());
    let mut body = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    if status.active.is_none() {
        // A merge patch keeps what it does not mention: say the list is empty now.
        body["active"] = serde_json::Value::Null;
    }
    api.patch_status(
        &cj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": body })),
    )
    .await
    .map(|_| ())
}

/// A standard five-field cron schedule (minute hour day-of-month month day-of-week), with
/// ranges, steps, lists, month and weekday names, `?`, and the `@hourly`-style descriptors.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day-of-month or day-of-week given as `*`: then both must match, else either (cron's rule).
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "expected 5 fields, found {}: {spec:?}",
                fields.len()
            ));
        };
        let weekdays = field(dow, 0, 7, WEEKDAYS, 0)?;
        // 7 is Sunday too.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Self {
            minutes: field(minute, 0, 59, &[], 0)?,
            hours: field(hour, 0, 23, &[], 0)?,
            days: field(dom, 1, 31, &[], 0)?,
            months: field(month, 1, 12, MONTHS, 1)?,
            weekdays,
            days_star: dom.starts_with('*') || dom.starts_with('?'),
            weekdays_star: dow.starts_with('*') || dow.starts_with('?'),
        })
    }

    fn day_matches(&self, date: jiff::civil::Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after`, looking at most five years ahead.
    pub fn next(&self, after: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> Option<jiff::Timestamp> {
        let zoned = after.to_zoned(tz.clone());
        let start = zoned.date();
        let mut date = start;
        for _ in 0..(366 * 5) {
            // On the first day, skip the hours and minutes already past.
            let (from_hour, from_minute) = if date == start {
                (zoned.hour(), zoned.minute())
            } else {
                (0, 0)
            };
            if self.months & (1 << date.month()) != 0 && self.day_matches(date) {
                for hour in from_hour..24i8 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    let first_minute = if hour == from_hour { from_minute } else { 0 };
                    for minute in first_minute..60i8 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let Ok(z) = date.at(hour, minute, 0, 0).to_zoned(tz.clone()) else {
                            continue;
                        };
                        if z.timestamp() > after {
                            return Some(z.timestamp());
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The latest scheduled time in `(earliest, now]`, if any.
    pub fn most_recent(
        &self,
        earliest: jiff::Timestamp,
        now: jiff::Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Option<jiff::Timestamp> {
        let mut last = None;
        let mut t = earliest;
        // Far behind (a long-stopped controller): only the most recent run matters, as upstream.
        let floor = now - jiff::SignedDuration::from_hours(24 * 7);
        if t < floor {
            t = floor;
        }
        while let Some(n) = self.next(t, tz) {
            if n > now {
                break;
            }
            last = Some(n);
            t = n;
        }
        last
    }
}

/// Parses one cron field into a bitset over `min..=max`; `names` (if any) map to `base + i`.
fn field(spec: &str, min: u32, max: u32, names: &[&str], base: u32) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(u32::try_from(i).unwrap_or(0) + base);
        }
        s.parse::<u32>().map_err(|_| format!("bad value {s:?}"))
    };
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("bad step {s:?}"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("zero step in {spec:?}"));
        }
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{range:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn next_follows_minutes_steps_and_names() {
        let utc = jiff::tz::TimeZone::UTC;
        let s = Schedule::parse("*/15 9-17 * * mon-fri").expect("parse");
        // Saturday → Monday 09:00.
        assert_eq!(
            s.next(ts("2026-11-28T10:00:00Z"), &utc),
            Some(ts("2026-11-30T09:00:00Z"))
        );
        assert_eq!(
            s.next(ts("2026-11-30T09:00:00Z"), &utc),
            Some(ts("2026-11-30T09:15:00Z"))
        );
        let hourly = Schedule::parse("@hourly").expect("parse");
        assert_eq!(
            hourly.next(ts("2026-11-30T09:59:59Z"), &utc),
            Some(ts("2026-11-30T10:00:00Z"))
        );
        // Day-of-month and day-of-week both restricted: either matches.
        let either = Schedule::parse("0 0 1 * sun").expect("parse");
        assert_eq!(
            either.next(ts("2026-11-28T00:00:00Z"), &utc),
            Some(ts("2026-11-29T00:00:00Z"))
        );
        assert!(Schedule::parse("* * *").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
    }

    #[test]
    fn most_recent_is_the_last_missed_time() {
        let utc = jiff::tz::TimeZone::UTC;
        let s = Schedule::parse("*/10 * * * *").expect("parse");
        assert_eq!(
            s.most_recent(ts("2026-11-30T09:00:00Z"), ts("2026-11-30T09:35:00Z"), &utc),
            Some(ts("2026-11-30T09:30:00Z"))
        );
        assert_eq!(
            s.most_recent(ts("2026-11-30T09:30:00Z"), ts("2026-11-30T09:35:00Z"), &utc),
            None
        );
    }
}
