//! The live status of a projection (or of another supervised feed actor, the Streams bridge): its state, position,
//! lag, restarts, parked count and rebuild progress, shared between the actor that reports into it and
//! `/admin/projections`, readiness and the `minVersion` readers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::telemetry;

/// Live state of one projection, shared with `/admin/projections` and readiness.
pub struct ProjectionStatus {
    pub name: &'static str,
    state: AtomicU8,
    position: AtomicU64,
    lag_millis: AtomicU64,
    restarts: AtomicU64,
    parked: AtomicU64,
    consecutive_failures: AtomicU64,
    /// Crashes (panics) since the last batch that went through: three in a row is a crash loop.
    consecutive_crashes: AtomicU64,
    /// A rebuild in progress: (position, target, events); target 0 = none.
    rebuild: [AtomicU64; 3],
    /// Bumped after every applied batch: `minVersion` readers wait on it.
    progress: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProjectorState {
    Starting = 0,
    Running = 1,
    Retrying = 2,
    Stopped = 3,
    /// Restarting after a crash.
    Restarting = 4,
    /// Crashed three times or more in a row.
    CrashLooping = 5,
    /// Being rebuilt from the write model (queries are served from the current view meanwhile).
    Rebuilding = 6,
}

impl ProjectorState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Running,
            2 => Self::Retrying,
            3 => Self::Stopped,
            4 => Self::Restarting,
            5 => Self::CrashLooping,
            6 => Self::Rebuilding,
            _ => Self::Starting,
        }
    }
}

/// One row of `GET /admin/projections`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionInfo {
    pub name: &'static str,
    pub status: ProjectorState,
    pub position: u64,
    pub lag_seconds: f64,
    pub restarts: u64,
    pub parked: u64,
    /// Progress of a rebuild in progress (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildProgress>,
}

/// How far a rebuild has come: in write-model log positions (embedded), or in events read out of about how
/// many the write model holds (distributed: the DynamoDB table's item count, which AWS refreshes only every
/// few hours, so `position` may pass `target` there).
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildProgress {
    pub position: u64,
    /// Where the write model reached when the rebuild started (it goes on until it has read everything).
    pub target: u64,
    pub events: u64,
}

impl ProjectionStatus {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            state: AtomicU8::new(0),
            position: AtomicU64::new(0),
            lag_millis: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            consecutive_crashes: AtomicU64::new(0),
            rebuild: Default::default(),
            progress: watch::channel(0).0,
        })
    }

    pub(crate) fn set_state(&self, state: ProjectorState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn info(&self) -> ProjectionInfo {
        let [position, target, events] = self.rebuild.each_ref().map(|a| a.load(Ordering::Relaxed));
        let rebuild = (target > 0).then_some(RebuildProgress { position, target, events });
        ProjectionInfo {
            name: self.name,
            status: match rebuild {
                Some(_) => ProjectorState::Rebuilding,
                None => ProjectorState::from_u8(self.state.load(Ordering::Relaxed)),
            },
            rebuild,
            position: self.position.load(Ordering::Relaxed),
            lag_seconds: self.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0,
            restarts: self.restarts.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
        }
    }

    /// Marks a rebuild as started (false if one is already running).
    pub(crate) fn begin_rebuild(&self, target: u64) -> bool {
        let started = self.rebuild[1].compare_exchange(0, target.max(1), Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if started {
            self.rebuild[0].store(0, Ordering::Relaxed);
            self.rebuild[2].store(0, Ordering::Relaxed);
        }
        started
    }

    pub(crate) fn rebuild_progress(&self, position: u64, events: u64) {
        self.rebuild[0].store(position, Ordering::Relaxed);
        self.rebuild[2].fetch_add(events, Ordering::Relaxed);
    }

    pub(crate) fn end_rebuild(&self) {
        self.rebuild[1].store(0, Ordering::Relaxed);
    }

    /// Healthy unless the projector keeps failing or keeps crashing.
    pub fn healthy(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) < 5 && self.consecutive_crashes.load(Ordering::Relaxed) < 3
    }

    pub fn set_parked(&self, parked: u64) {
        self.parked.store(parked, Ordering::Relaxed);
    }

    /// Records where the view starts (its stored checkpoint).
    pub fn set_position(&self, position: u64) {
        self.position.store(position, Ordering::Relaxed);
    }

    // What a supervised actor (a projector, the Streams bridge) reports, so that it shows in
    // `/admin/projections` and readiness.

    /// A step went through: the failure streak ends, and the crash streak too when the step got past where a
    /// crash can happen (`past_crashes`: it read its records, not only set itself up after a restart).
    pub(crate) fn record_step(&self, past_crashes: bool) {
        if past_crashes {
            self.consecutive_crashes.store(0, Ordering::Relaxed);
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.mark_running();
    }

    /// [`Self::record_step`], with where the actor got to and, when it could tell, its lag.
    pub(crate) fn record_progress(&self, position: u64, lag: Option<Duration>, past_crashes: bool) {
        self.position.store(position, Ordering::Relaxed);
        if let Some(lag) = lag {
            self.set_lag(lag);
        }
        self.record_step(past_crashes);
    }

    /// Running again (its feed open), unless it is crash-looping: that shows until a step gets past the crash.
    pub(crate) fn mark_running(&self) {
        if self.consecutive_crashes.load(Ordering::Relaxed) < 3 {
            self.set_state(ProjectorState::Running);
        }
    }

    pub(crate) fn set_lag(&self, lag: Duration) {
        self.lag_millis.store(u64::try_from(lag.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A step failed (it is retried): the failure streak, after this one.
    pub(crate) fn record_failure(&self) -> u64 {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.consecutive_crashes.load(Ordering::Relaxed) < 3 {
            self.set_state(ProjectorState::Retrying);
        }
        failures
    }

    /// The actor crashed (it stops; its supervisor restarts it): the crash streak, after this one.
    pub(crate) fn record_crash(&self) -> u64 {
        self.consecutive_crashes.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The supervisor restarts the actor: counted (`orderflow_projector_restarts_total`), and shown as
    /// restarting, or as crash-looping from the third crash in a row.
    pub(crate) fn record_restart(&self) -> u64 {
        let crashes = self.consecutive_crashes.load(Ordering::Relaxed);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        telemetry::projector_restarted(self.name);
        self.set_state(if crashes >= 3 { ProjectorState::CrashLooping } else { ProjectorState::Restarting });
        crashes
    }

    /// Crashes in a row so far (0 once a step went through).
    pub(crate) fn crash_streak(&self) -> u64 {
        self.consecutive_crashes.load(Ordering::Relaxed)
    }

    /// Changes after every batch the view applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// A batch was applied: wakes the `minVersion` readers.
    pub(crate) fn batch_applied(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }
}
