//! `Projections`: the admin facade over the running projectors (and the Streams bridge): their status rows,
//! readiness, parked events, replays and rebuilds, as `/admin/*`, readiness and the console use them.

use std::sync::Arc;

use actix::prelude::*;

use super::bridge::Bridge;
use super::projector::{Projector, Replay};
use crate::projection::parking::ParkingLot;
use crate::projection::{ProjectionInfo, ProjectionStatus, rebuild};
use crate::store::RebuildSource;
use crate::views::ViewError;
use crate::views::parked::{ParkedEvent, ParkedStore};

/// A running projector: its shared status, its parked events and its address.
#[derive(Clone)]
pub struct ProjectionHandle {
    pub status: Arc<ProjectionStatus>,
    pub lot: ParkingLot,
    pub addr: Addr<Projector>,
}

/// The application's projectors, by name, with the store of their parked events.
#[derive(Clone)]
pub struct Projections {
    handles: Arc<Vec<ProjectionHandle>>,
    parked: Arc<dyn ParkedStore>,
    /// Where rebuilds read the write model from.
    source: Arc<dyn RebuildSource>,
    /// The Streams bridge's status and address, where there is a bridge.
    bridge: Option<Arc<ProjectionStatus>>,
    bridge_addr: Option<Addr<Bridge>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection named {0}")]
    UnknownProjection(String),
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    /// The view's backend could not make the fresh copy (nothing changed; try again later).
    #[error("cannot start the rebuild: {0}")]
    Unavailable(String),
}

impl Projections {
    pub fn new(handles: Vec<ProjectionHandle>, parked: Arc<dyn ParkedStore>, source: Arc<dyn RebuildSource>) -> Self {
        Self { handles: Arc::new(handles), parked, source, bridge: None, bridge_addr: None }
    }

    /// Starts rebuilding a view from the write model into a fresh copy, swapped in when it has caught up.
    /// Queries keep being served from the current view meanwhile; the projector waits (its lag grows) and
    /// then goes on from where it was, its re-delivered events deduplicated by the new view. Progress shows
    /// in [`ProjectionInfo::rebuild`].
    pub async fn rebuild(&self, name: &str) -> Result<(), RebuildError> {
        let handle = self
            .handles
            .iter()
            .find(|h| h.status.name == name)
            .ok_or_else(|| RebuildError::UnknownProjection(name.to_owned()))?;
        let source = Arc::clone(&self.source);
        if !handle.status.begin_rebuild(source.head().await) {
            return Err(RebuildError::AlreadyRunning(name.to_owned()));
        }
        let (lot, status) = (handle.lot.clone(), Arc::clone(&handle.status));
        let rebuilder = match lot.projection().rebuild().await {
            Ok(rebuilder) => rebuilder,
            Err(e) => {
                status.end_rebuild();
                return Err(RebuildError::Unavailable(e.to_string()));
            }
        };
        actix::spawn(async move {
            let started = std::time::Instant::now();
            let result = rebuild::fill(rebuilder, &*source, &lot, &status).await;
            status.end_rebuild();
            match result {
                Ok(events) => tracing::info!(projection = status.name, events, elapsed = ?started.elapsed(),
                    rate = events as f64 / started.elapsed().as_secs_f64().max(1e-9), "rebuild swapped in"),
                Err(e) => {
                    tracing::error!(projection = status.name, error = %e, "rebuild failed; the current view stays")
                }
            }
        });
        Ok(())
    }

    /// Every parked event, oldest first.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, ViewError> {
        self.parked.list().await
    }

    /// Shows the Streams bridge (distributed profile) beside the projectors: in `/admin/projections` and in
    /// readiness (`projection:bridge`). It has no view, so nothing to rebuild, replay or park.
    pub fn with_bridge(mut self, addr: Addr<Bridge>, status: Arc<ProjectionStatus>) -> Self {
        // Held for the supervisor: it restarts a crashed actor only while someone still holds its address.
        self.bridge_addr = Some(addr);
        self.bridge = Some(status);
        self
    }

    pub fn infos(&self) -> Vec<ProjectionInfo> {
        self.handles.iter().map(|h| &h.status).chain(&self.bridge).map(|s| s.info()).collect()
    }

    pub fn status(&self, name: &str) -> Option<&Arc<ProjectionStatus>> {
        self.handles.iter().map(|h| &h.status).chain(&self.bridge).find(|s| s.name == name)
    }

    /// Every projector is running and not stuck failing.
    pub fn healthy(&self) -> bool {
        self.handles.iter().all(|h| h.addr.connected() && h.status.healthy()) && self.bridge.iter().all(|s| s.healthy())
    }

    /// The parking lot of one projection.
    pub fn lot(&self, name: &str) -> Option<&ParkingLot> {
        self.handles.iter().find(|h| h.status.name == name).map(|h| &h.lot)
    }

    /// Replays the whole feed into one view (see [`Replay`]).
    pub async fn replay(&self, name: &str) -> Result<(), String> {
        let handle =
            self.handles.iter().find(|h| h.status.name == name).ok_or_else(|| format!("no projection {name}"))?;
        handle.addr.send(Replay).await.map_err(|e| e.to_string())?
    }
}
