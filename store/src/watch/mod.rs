//! The watch hub (placeholder until the hub lands): receives each committed group's events.

use std::sync::Arc;

use crate::backend::Backend;
use crate::mvcc::{Mvcc, RevisionEvents};

pub(crate) struct WatchHub {
    #[allow(dead_code)]
    mvcc: Arc<Mvcc>,
    #[allow(dead_code)]
    backend: Arc<dyn Backend>,
}

impl WatchHub {
    pub(crate) fn new(mvcc: Arc<Mvcc>, backend: Arc<dyn Backend>) -> Arc<WatchHub> {
        Arc::new(WatchHub { mvcc, backend })
    }

    /// Called by the apply thread after each commit; must never block.
    pub(crate) fn publish(&self, _events: Vec<RevisionEvents>) {}
}
