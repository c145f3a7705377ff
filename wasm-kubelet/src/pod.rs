//! A pod's lifecycle as data: the containers' states, the pod's phase, and a pure [`step`]
//! function that turns one event into the next state plus the actions the supervisor must take.
//! Nothing here touches wasmtime, the clock or the apiserver, so every rule is unit-tested.

use std::time::Duration;

use jiff::Timestamp;

/// First CrashLoopBackOff delay; doubles per consecutive crash up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(10);
/// Longest CrashLoopBackOff delay (upstream: 5 min).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts over at the base delay.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// `spec.restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Parses the API string; anything unknown is `Always`, the API default.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }

    fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// `status.phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// Where the pod is in its life: the enum the supervisor drives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Running init container `n` (they run one at a time, in order).
    Init(usize),
    /// All init containers succeeded; the app containers run (and restart per policy).
    Main,
    /// Every container has terminated for good.
    Done,
    /// Deletion asked: containers are being stopped within the grace period.
    Terminating,
    /// Deletion finished: nothing runs; the pod object may be removed.
    Terminated,
}

/// How a container's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// A container's state as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Waiting {
        reason: String,
        message: Option<String>,
        /// When the supervisor may try again (backoff), if it is waiting on time.
        retry_at: Option<Timestamp>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Termination),
}

/// One container's record: its state, the previous termination, restarts and backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub state: ContainerState,
    pub last_termination: Option<Termination>,
    pub restart_count: u32,
    /// The delay the next crash will wait; `None` before the first crash.
    pub backoff: Option<Duration>,
    /// Digest-based image ID once the image is resolved.
    pub image_id: Option<String>,
    /// Whether a start is in flight (asked of the supervisor, not yet reported).
    pub starting: bool,
    /// The next start is a restart (counted when it happens, as upstream's `restartCount`).
    pub restart_pending: bool,
}

impl Container {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
                retry_at: None,
            },
            last_termination: None,
            restart_count: 0,
            backoff: None,
            image_id: None,
            starting: false,
            restart_pending: false,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    fn terminated(&self) -> Option<&Termination> {
        match &self.state {
            ContainerState::Terminated(t) => Some(t),
            _ => None,
        }
    }
}

/// Which container an event or action is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Init(usize),
    Main(usize),
}

/// Something that happened to the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Time passed (the supervisor's timer fired); due retries happen.
    Tick,
    /// The container's sandbox started running.
    Started { slot: Slot, image_id: String },
    /// The container could not be started: image pull or sandbox creation failed.
    StartFailed {
        slot: Slot,
        reason: String,
        message: String,
    },
    /// The container's guest returned, trapped or was killed.
    Exited {
        slot: Slot,
        termination: Termination,
    },
    /// The pod is being deleted: stop everything.
    Delete,
    /// `activeDeadlineSeconds` passed: stop everything; the pod fails.
    DeadlineExceeded,
    /// The kubelet gives up on the pod (eviction, a refused volume): stop everything; the pod
    /// fails with this `status.reason` and `status.message`.
    Fail { reason: String, message: String },
}

/// What the supervisor must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pull the image if needed, create the sandbox and run the container.
    Start(Slot),
    /// Stop every running container (graceful, then by epoch interruption).
    StopAll,
}

/// The whole mutable state of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub restart_policy: RestartPolicy,
    pub stage: Stage,
    pub init: Vec<Container>,
    pub main: Vec<Container>,
    /// First CrashLoopBackOff delay (configurable so tests need not wait 10 s).
    pub base_backoff: Duration,
    /// `activeDeadlineSeconds` passed (the pod fails with reason `DeadlineExceeded`).
    pub deadline_exceeded: bool,
    /// Why the kubelet failed the pod (`status.reason`, `status.message`), e.g. `Evicted`.
    pub failure: Option<(String, String)>,
}

impl PodState {
    /// A fresh pod: nothing started yet.
    pub fn new(
        restart_policy: RestartPolicy,
        init: &[String],
        main: &[String],
        base_backoff: Duration,
    ) -> Self {
        let mut init: Vec<Container> = init.iter().map(|n| Container::new(n)).collect();
        let main: Vec<Container> = main
            .iter()
            .map(|n| {
                let mut c = Container::new(n);
                if !init.is_empty() {
                    c.state = waiting("PodInitializing", None, None);
                }
                c
            })
            .collect();
        if let Some(first) = init.first_mut() {
            first.state = waiting("PodInitializing", None, None);
        }
        Self {
            restart_policy,
            stage: if init.is_empty() {
                Stage::Main
            } else {
                Stage::Init(0)
            },
            init,
            main,
            base_backoff,
            deadline_exceeded: false,
            failure: None,
        }
    }

    pub fn container(&self, slot: Slot) -> Option<&Container> {
        match slot {
            Slot::Init(i) => self.init.get(i),
            Slot::Main(i) => self.main.get(i),
        }
    }

    fn container_mut(&mut self, slot: Slot) -> Option<&mut Container> {
        match slot {
            Slot::Init(i) => self.init.get_mut(i),
            Slot::Main(i) => self.main.get_mut(i),
        }
    }

    /// `status.phase` derived from the containers, as upstream does.
    pub fn phase(&self) -> Phase {
        match self.stage {
            Stage::Init(_) => Phase::Pending,
            Stage::Main => {
                let ever_ran = |c: &Container| {
                    c.restart_count > 0
                        || c.restart_pending
                        || c.is_running()
                        || c.terminated().is_some()
                };
                if self.main.iter().any(ever_ran) {
                    Phase::Running
                } else {
                    Phase::Pending
                }
            }
            Stage::Done | Stage::Terminating | Stage::Terminated
                if self.deadline_exceeded || self.failure.is_some() =>
            {
                Phase::Failed
            }
            Stage::Done | Stage::Terminating | Stage::Terminated => {
                let init_failed = self
                    .init
                    .iter()
                    .any(|c| c.terminated().is_some_and(|t| t.exit_code != 0));
                let ended: Vec<&Termination> =
                    self.main.iter().filter_map(|c| c.terminated()).collect();
                if init_failed || ended.iter().any(|t| t.exit_code != 0) {
                    Phase::Failed
                } else if ended.len() == self.main.len() {
                    Phase::Succeeded
                } else if ended.is_empty() && self.main.iter().all(|c| c.restart_count == 0) {
                    // Deleted before anything ran.
                    Phase::Pending
                } else {
                    Phase::Failed
                }
            }
        }
    }

    /// Whether all init containers have completed.
    pub fn initialized(&self) -> bool {
        !matches!(self.stage, Stage::Init(_))
    }

    /// Whether every app container is running.
    pub fn containers_ready(&self) -> bool {
        !self.main.is_empty() && self.main.iter().all(Container::is_running)
    }

    /// The earliest pending retry, for the supervisor's timer.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.init
            .iter()
            .chain(&self.main)
            .filter_map(|c| match &c.state {
                ContainerState::Waiting { retry_at, .. } if !c.starting => *retry_at,
                _ => None,
            })
            .min()
    }

    /// Whether nothing runs any more and nothing will (the supervisor may finish).
    pub fn finished(&self) -> bool {
        matches!(self.stage, Stage::Done | Stage::Terminated)
            && !self
                .init
                .iter()
                .chain(&self.main)
                .any(|c| c.is_running() || c.starting)
    }
}

fn waiting(reason: &str, message: Option<String>, retry_at: Option<Timestamp>) -> ContainerState {
    ContainerState::Waiting {
        reason: reason.into(),
        message,
        retry_at,
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

/// Advances `state` by one `event` at time `now`, returning what the supervisor must do.
pub fn step(state: &mut PodState, event: Event, now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    match event {
        Event::Delete => {
            if !matches!(state.stage, Stage::Terminating | Stage::Terminated) {
                state.stage = Stage::Terminating;
                actions.push(Action::StopAll);
            }
            for c in state.init.iter_mut().chain(state.main.iter_mut()) {
                if let ContainerState::Waiting { retry_at, .. } = &mut c.state {
                    *retry_at = None;
                }
            }
        }
        Event::DeadlineExceeded | Event::Fail { .. } => {
            if !matches!(
                state.stage,
                Stage::Done | Stage::Terminating | Stage::Terminated
            ) {
                match event {
                    Event::Fail { reason, message } => state.failure = Some((reason, message)),
                    _ => state.deadline_exceeded = true,
                }
                state.stage = Stage::Done;
                actions.push(Action::StopAll);
                for c in state.init.iter_mut().chain(state.main.iter_mut()) {
                    if let ContainerState::Waiting { retry_at, .. } = &mut c.state {
                        *retry_at = None;
                    }
                }
            }
        }
        Event::Started { slot, image_id } => {
            if let Some(c) = state.container_mut(slot) {
                c.starting = false;
                c.image_id = Some(image_id);
                c.state = ContainerState::Running { started_at: now };
            }
        }
        Event::StartFailed {
            slot,
            reason,
            message,
        } => {
            let terminating = matches!(
                state.stage,
                Stage::Done | Stage::Terminating | Stage::Terminated
            );
            let base = state.base_backoff;
            if let Some(c) = state.container_mut(slot) {
                c.starting = false;
                let delay = next_backoff(c, base, None);
                // A repeated pull failure shows as ImagePullBackOff while it waits, as upstream.
                let shown = match &c.state {
                    ContainerState::Waiting { reason: prev, .. }
                        if reason == "ErrImagePull"
                            && (prev == "ErrImagePull" || prev == "ImagePullBackOff") =>
                    {
                        "ImagePullBackOff".to_string()
                    }
                    _ => reason,
                };
                c.state = ContainerState::Waiting {
                    reason: shown,
                    message: Some(message),
                    retry_at: (!terminating).then(|| add(now, delay)),
                };
            }
        }
        Event::Exited { slot, termination } => {
            on_exit(state, slot, termination, now, &mut actions);
        }
        Event::Tick => {}
    }
    if matches!(state.stage, Stage::Terminating) {
        let busy = state
            .init
            .iter()
            .chain(&state.main)
            .any(|c| c.is_running() || c.starting);
        if !busy {
            state.stage = Stage::Terminated;
        }
        return actions;
    }
    schedule(state, now, &mut actions);
    actions
}

/// Computes the delay before the next restart and advances the container's backoff.
fn next_backoff(c: &mut Container, base: Duration, ran: Option<Duration>) -> Duration {
    if ran.is_some_and(|r| r >= BACKOFF_RESET_AFTER) {
        c.backoff = None;
    }
    let delay = c.backoff.unwrap_or(base);
    c.backoff = Some((delay * 2).min(MAX_BACKOFF));
    delay.min(MAX_BACKOFF)
}

fn on_exit(
    state: &mut PodState,
    slot: Slot,
    termination: Termination,
    now: Timestamp,
    actions: &mut Vec<Action>,
) {
    // Nothing restarts once the pod is stopping or done (deletion, deadline, failed init).
    let terminating = matches!(
        state.stage,
        Stage::Done | Stage::Terminating | Stage::Terminated
    );
    let policy = state.restart_policy;
    let base = state.base_backoff;
    let Some(c) = state.container_mut(slot) else {
        return;
    };
    c.starting = false;
    let code = termination.exit_code;
    let ran = termination
        .finished_at
        .duration_since(termination.started_at)
        .try_into()
        .ok();
    c.state = ContainerState::Terminated(termination);
    if terminating {
        return;
    }
    // Init containers must succeed; they restart on failure unless the policy is Never.
    let restart = match slot {
        Slot::Init(_) => code != 0 && policy != RestartPolicy::Never,
        Slot::Main(_) => policy.restarts(code),
    };
    if restart {
        let delay = next_backoff(c, base, ran);
        if let ContainerState::Terminated(t) = &c.state {
            c.last_termination = Some(t.clone());
        }
        c.restart_pending = true;
        c.state = ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(format!(
                "back-off {}s restarting failed container={}",
                delay.as_secs_f64(),
                c.name
            )),
            retry_at: Some(add(now, delay)),
        };
        return;
    }
    match slot {
        Slot::Init(i) if code == 0 => {
            if i + 1 < state.init.len() {
                state.stage = Stage::Init(i + 1);
                state.init[i + 1].state = waiting("PodInitializing", None, None);
            } else {
                state.stage = Stage::Main;
                for c in &mut state.main {
                    c.state = waiting("ContainerCreating", None, None);
                }
            }
        }
        Slot::Init(_) => {
            // A failed init container under restartPolicy Never fails the pod.
            state.stage = Stage::Done;
            actions.push(Action::StopAll);
        }
        Slot::Main(_) => {
            let all_done = state
                .main
                .iter()
                .all(|c| c.terminated().is_some() && !c.starting);
            if all_done {
                state.stage = Stage::Done;
            }
        }
    }
}

fn begin(c: &mut Container) {
    c.starting = true;
    if std::mem::take(&mut c.restart_pending) {
        c.restart_count += 1;
    }
}

/// Starts whatever should run now: the current init container or the app containers whose
/// start (or retry) is due.
fn schedule(state: &mut PodState, now: Timestamp, actions: &mut Vec<Action>) {
    let due = |c: &Container| {
        !c.starting
            && match &c.state {
                ContainerState::Waiting { retry_at, .. } => retry_at.is_none_or(|at| at <= now),
                _ => false,
            }
    };
    match state.stage {
        Stage::Init(i) => {
            if let Some(c) = state.init.get_mut(i) {
                if due(c) {
                    begin(c);
                    actions.push(Action::Start(Slot::Init(i)));
                }
            }
        }
        Stage::Main => {
            for (i, c) in state.main.iter_mut().enumerate() {
                if due(c) {
                    begin(c);
                    actions.push(Action::Start(Slot::Main(i)));
                }
            }
        }
        Stage::Done | Stage::Terminating | Stage::Terminated => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn exit(code: i32, started: i64, finished: i64) -> Termination {
        Termination {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: t(started),
            finished_at: t(finished),
        }
    }

    fn pod(policy: RestartPolicy, init: &[&str], main: &[&str]) -> PodState {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PodState::new(policy, &s(init), &s(main), BASE_BACKOFF)
    }

    fn started(slot: Slot) -> Event {
        Event::Started {
            slot,
            image_id: "sha256:abc".into(),
        }
    }

    #[test]
    fn a_new_pod_starts_all_app_containers_and_is_pending() {
        let mut p = pod(RestartPolicy::Always, &[], &["a", "b"]);
        let actions = step(&mut p, Event::Tick, t(0));
        assert_eq!(
            actions,
            vec![Action::Start(Slot::Main(0)), Action::Start(Slot::Main(1))]
        );
        assert_eq!(p.phase(), Phase::Pending);
        // A second tick does not start them twice.
        assert!(step(&mut p, Event::Tick, t(0)).is_empty());
        step(&mut p, started(Slot::Main(0)), t(1));
        assert_eq!(p.phase(), Phase::Running);
        assert!(!p.containers_ready());
        step(&mut p, started(Slot::Main(1)), t(1));
        assert!(p.containers_ready());
    }

    #[test]
    fn never_policy_success_is_succeeded_and_failure_is_failed() {
        let mut p = pod(RestartPolicy::Never, &[], &["a"]);
        step(&mut p, Event::Tick, t(0));
        step(&mut p, started(Slot::Main(0)), t(0));
        let actions = step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(0),
                termination: exit(0, 0, 1),
            },
            t(1),
        );
        assert!(actions.is_empty());
        assert_eq!(p.phase(), Phase::Succeeded);
        assert!(p.finished());

        let mut p = pod(RestartPolicy::Never, &[], &["a", "b"]);
        step(&mut p, Event::Tick, t(0));
        step(&mut p, started(Slot::Main(0)), t(0));
        step(&mut p, started(Slot::Main(1)), t(0));
        step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(0),
                termination: exit(0, 0, 1),
            },
            t(1),
        );
        assert_eq!(p.phase(), Phase::Running, "b still runs");
        step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(1),
                termination: exit(3, 0, 2),
            },
            t(2),
        );
        assert_eq!(p.phase(), Phase::Failed);
        assert_eq!(p.main[1].restart_count, 0);
    }

    #[test]
    fn on_failure_restarts_only_failures() {
        let mut p = pod(RestartPolicy::OnFailure, &[], &["a"]);
        step(&mut p, Event::Tick, t(0));
        step(&mut p, started(Slot::Main(0)), t(0));
        step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(0),
                termination: exit(2, 0, 1),
            },
            t(1),
        );
        assert_eq!(
            p.main[0].restart_count, 0,
            "counted when the restart starts"
        );
        assert_eq!(p.phase(), Phase::Running);
        assert_eq!(p.next_wakeup(), Some(t(11)));
        assert!(
            step(&mut p, Event::Tick, t(5)).is_empty(),
            "still backing off"
        );
        assert_eq!(
            step(&mut p, Event::Tick, t(11)),
            vec![Action::Start(Slot::Main(0))]
        );
        assert_eq!(p.main[0].restart_count, 1);
        step(&mut p, started(Slot::Main(0)), t(11));
        step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(0),
                termination: exit(0, 11, 12),
            },
            t(12),
        );
        assert_eq!(p.phase(), Phase::Succeeded);
        assert_eq!(p.main[0].restart_count, 1);
        assert_eq!(
            p.main[0].last_termination.as_ref().map(|t| t.exit_code),
            Some(2)
        );
    }

    #[test]
    fn crash_loop_backoff_doubles_to_five_minutes_and_resets_after_ten_minutes_running() {
        let mut p = pod(RestartPolicy::Always, &[], &["a"]);
        let mut now = 0;
        let mut delays = Vec::new();
        step(&mut p, Event::Tick, t(now));
        for _ in 0..8 {
            step(&mut p, started(Slot::Main(0)), t(now));
            step(
                &mut p,
                Event::Exited {
                    slot: Slot::Main(0),
                    termination: exit(0, now, now + 1),
                },
                t(now + 1),
            );
            match &p.main[0].state {
                ContainerState::Waiting { reason, .. } => assert_eq!(reason, "CrashLoopBackOff"),
                s => panic!("expected waiting, got {s:?}"),
            }
            let wake = p.next_wakeup().expect("a retry is scheduled");
            delays.push(wake.as_second() - t(now + 1).as_second());
            now = wake.as_second() - t(0).as_second();
            assert_eq!(
                step(&mut p, Event::Tick, t(now)),
                vec![Action::Start(Slot::Main(0))]
            );
        }
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(p.main[0].restart_count, 8);
        // Ten minutes of running resets the delay to the base.
        step(&mut p, started(Slot::Main(0)), t(now));
        step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(0),
                termination: exit(1, now, now + 601),
            },
            t(now + 601),
        );
        assert_eq!(p.next_wakeup(), Some(t(now + 611)));
    }

    #[test]
    fn init_containers_run_in_order_before_the_app() {
        let mut p = pod(RestartPolicy::Always, &["i1", "i2"], &["a"]);
        assert_eq!(
            step(&mut p, Event::Tick, t(0)),
            vec![Action::Start(Slot::Init(0))]
        );
        assert_eq!(p.phase(), Phase::Pending);
        step(&mut p, started(Slot::Init(0)), t(0));
        let a = step(
            &mut p,
            Event::Exited {
                slot: Slot::Init(0),
                termination: exit(0, 0, 1),
            },
            t(1),
        );
        assert_eq!(a, vec![Action::Start(Slot::Init(1))]);
        assert!(!p.initialized());
        step(&mut p, started(Slot::Init(1)), t(1));
        let a = step(
            &mut p,
            Event::Exited {
                slot: Slot::Init(1),
                termination: exit(0, 1, 2),
            },
            t(2),
        );
        assert_eq!(a, vec![Action::Start(Slot::Main(0))]);
        assert!(p.initialized());
    }

    #[test]
    fn a_failed_init_container_retries_or_fails_the_pod_under_never() {
        let mut p = pod(RestartPolicy::OnFailure, &["i"], &["a"]);
        step(&mut p, Event::Tick, t(0));
        step(&mut p, started(Slot::Init(0)), t(0));
        let a = step(
            &mut p,
            Event::Exited {
                slot: Slot::Init(0),
                termination: exit(1, 0, 1),
            },
            t(1),
        );
        assert!(a.is_empty());
        assert_eq!(
            step(&mut p, Event::Tick, t(11)),
            vec![Action::Start(Slot::Init(0))]
        );
        assert_eq!(p.init[0].restart_count, 1);

        let mut p = pod(RestartPolicy::Never, &["i"], &["a"]);
        step(&mut p, Event::Tick, t(0));
        step(&mut p, started(Slot::Init(0)), t(0));
        step(
            &mut p,
            Event::Exited {
                slot: Slot::Init(0),
                termination: exit(1, 0, 1),
            },
            t(1),
        );
        assert_eq!(p.phase(), Phase::Failed);
        assert!(p.finished());
    }

    #[test]
    fn start_failures_wait_with_their_reason_and_pull_failures_become_backoff() {
        let mut p = pod(RestartPolicy::Always, &[], &["a"]);
        step(&mut p, Event::Tick, t(0));
        let fail = |reason: &str| Event::StartFailed {
            slot: Slot::Main(0),
            reason: reason.into(),
            message: "manifest unknown".into(),
        };
        step(&mut p, fail("ErrImagePull"), t(0));
        let reason = |p: &PodState| match &p.main[0].state {
            ContainerState::Waiting { reason, .. } => reason.clone(),
            s => panic!("{s:?}"),
        };
        assert_eq!(reason(&p), "ErrImagePull");
        assert_eq!(p.next_wakeup(), Some(t(10)));
        step(&mut p, Event::Tick, t(10));
        step(&mut p, fail("ErrImagePull"), t(10));
        assert_eq!(reason(&p), "ImagePullBackOff");
        assert_eq!(p.next_wakeup(), Some(t(30)));
        assert_eq!(p.phase(), Phase::Pending);

        let mut p = pod(RestartPolicy::Always, &[], &["a"]);
        step(&mut p, Event::Tick, t(0));
        step(&mut p, fail("CreateContainerError"), t(0));
        assert_eq!(reason(&p), "CreateContainerError");
    }

    #[test]
    fn delete_stops_everything_and_terminates_once_all_exited() {
        let mut p = pod(RestartPolicy::Always, &[], &["a", "b"]);
        step(&mut p, Event::Tick, t(0));
        step(&mut p, started(Slot::Main(0)), t(0));
        step(&mut p, started(Slot::Main(1)), t(0));
        assert_eq!(step(&mut p, Event::Delete, t(5)), vec![Action::StopAll]);
        assert_eq!(p.stage, Stage::Terminating);
        assert!(step(&mut p, Event::Delete, t(5)).is_empty(), "asked once");
        step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(0),
                termination: exit(137, 0, 6),
            },
            t(6),
        );
        assert!(!p.finished());
        let a = step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(1),
                termination: exit(137, 0, 6),
            },
            t(6),
        );
        assert!(a.is_empty(), "no restart while terminating");
        assert!(p.finished());
        assert_eq!(p.main[0].restart_count, 0);
    }

    #[test]
    fn an_exceeded_deadline_stops_the_pod_for_good_and_fails_it() {
        let mut p = pod(RestartPolicy::Always, &[], &["a"]);
        step(&mut p, Event::Tick, t(0));
        step(&mut p, started(Slot::Main(0)), t(0));
        assert_eq!(
            step(&mut p, Event::DeadlineExceeded, t(30)),
            vec![Action::StopAll]
        );
        let a = step(
            &mut p,
            Event::Exited {
                slot: Slot::Main(0),
                termination: exit(137, 0, 30),
            },
            t(30),
        );
        assert!(a.is_empty(), "no restart after the deadline");
        assert!(p.finished());
        assert_eq!(p.phase(), Phase::Failed);
        assert!(step(&mut p, Event::DeadlineExceeded, t(31)).is_empty());
    }

    #[test]
    fn a_kubelet_failure_of_a_pod_that_never_started_fails_it_with_its_reason() {
        let mut p = pod(RestartPolicy::Always, &[], &["a"]);
        step(&mut p, Event::Tick, t(0));
        let fail = Event::Fail {
            reason: "Evicted".into(),
            message: "too big".into(),
        };
        assert_eq!(step(&mut p, fail, t(1)), vec![Action::StopAll]);
        step(
            &mut p,
            Event::StartFailed {
                slot: Slot::Main(0),
                reason: "ContainerCreating".into(),
                message: "stopped".into(),
            },
            t(1),
        );
        assert!(p.finished());
        assert_eq!(p.next_wakeup(), None, "no retry after the failure");
        assert_eq!(p.phase(), Phase::Failed);
        assert_eq!(p.failure, Some(("Evicted".into(), "too big".into())));
    }

    #[test]
    fn delete_of_a_pod_waiting_in_backoff_finishes_at_once() {
        let mut p = pod(RestartPolicy::Always, &[], &["a"]);
        step(&mut p, Event::Tick, t(0));
        step(
            &mut p,
            Event::StartFailed {
                slot: Slot::Main(0),
                reason: "ErrImagePull".into(),
                message: "nope".into(),
            },
            t(0),
        );
        step(&mut p, Event::Delete, t(1));
        assert!(p.finished());
        assert_eq!(p.next_wakeup(), None);
    }
}
