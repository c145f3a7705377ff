use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn cronjob_starts_the_missed_run_as_a_job() -> anyhow::Result<()> {
    let c = cluster().await?;
    let api: Api<CronJob> = Api::namespaced(c.client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick", "namespace": "default"},
        "spec": {
            "schedule": "* * * * *",
            "timeZone": "UTC",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "metadata": {"labels": {"team": "a"}},
                // Suspended: the Job controller leaves it alone (no pods in this test).
                "spec": {"suspend": true, "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "example.com/task:1"}],
                }}},
            },
        },
    }))?;
    let cj = api.create(&PostParams::default(), &cj).await?;
    // Pretend the last run was two minutes ago, so one run is due now.
    let now = jiff::Timestamp::now();
    let minute = now.as_second().div_euclid(60);
    let last = jiff::Timestamp::from_second((minute - 2) * 60)?;
    let patch =
        json!({"status": {"lastScheduleTime": last.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}});
    api.patch_status("tick", &PatchParams::default(), &Patch::Merge(patch))
        .await?;

    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let job = wait_for("the due job", || async {
        let list = jobs.list(&Default::default()).await?;
        Ok(list
            .items
            .into_iter()
            .find(|j| j.name_any().starts_with("tick-")))
    })
    .await?;
    let scheduled_minute: i64 = job.name_any().trim_start_matches("tick-").parse()?;
    assert!(scheduled_minute > minute - 2 && scheduled_minute <= minute + 1);
    assert_eq!(job.labels().get("team").map(String::as_str), Some("a"));
    let owner = job.owner_references().first().cloned().expect("owner");
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("CronJob", cj.uid().unwrap_or_default().as_str(), Some(true))
    );
    assert!(job
        .annotations()
        .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp"));
    wait_for("status lists the active job", || async {
        let s = api.get("tick").await?.status.unwrap_or_default();
        let active = s.active.unwrap_or_default();
        let listed = active
            .iter()
            .any(|r| r.name.as_deref() == Some(job.name_any().as_str()));
        let scheduled =
            s.last_schedule_time.map(|t| t.0.as_second() / 60) == Some(scheduled_minute);
        Ok((listed && scheduled).then_some(()))
    })
    .await?;
    Ok(())
}
