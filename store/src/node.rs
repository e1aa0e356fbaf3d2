//! The proposer: "propose → apply in log order", for a single member.
//!
//! Every write is a [`Command`] sent to one apply thread. The thread takes whatever proposals
//! are queued (up to [`MAX_GROUP`]), gives them consecutive log indexes, applies them in order
//! into one backend batch, and commits that batch with a single fsync (group commit) before it
//! publishes the new revision, hands the events to the watch hub and answers the proposers.
//! So no write is acknowledged before it is durable, and concurrent writers share fsyncs.
//!
//! Replication (the raft crate) replaces this with a replicated log whose entries are applied
//! through the same [`Applier`].

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::apply::{Applier, Command, Response};
use crate::error::{Error, Result};
use crate::mvcc::RevisionEvents;

/// The most commands applied under one fsync.
const MAX_GROUP: usize = 1024;

/// Receives each committed group's events, in revision order. Must not block.
pub(crate) type Publish = Arc<dyn Fn(Vec<RevisionEvents>) + Send + Sync>;

struct Proposal {
    cmd: Command,
    done: oneshot::Sender<Result<Response>>,
}

#[derive(Clone)]
pub(crate) struct Node {
    tx: mpsc::Sender<Proposal>,
}

impl Node {
    /// Starts the apply thread. It stops when every `Node` handle is dropped.
    pub(crate) fn start(applier: Arc<Applier>, publish: Publish) -> Result<Node> {
        let (tx, rx) = mpsc::channel::<Proposal>(4 * MAX_GROUP);
        let first = applier.consistent_index()?;
        std::thread::Builder::new()
            .name("keelson-apply".into())
            .spawn(move || apply_loop(applier, publish, rx, first))
            .map_err(Error::from)?;
        Ok(Node { tx })
    }

    /// Proposes a command and waits until it is applied and durable.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<Response> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Proposal { cmd, done })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }
}

fn apply_loop(
    applier: Arc<Applier>,
    publish: Publish,
    mut rx: mpsc::Receiver<Proposal>,
    mut index: u64,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(p) = rx.blocking_recv() {
        group.push(p);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let mut batch = Default::default();
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(group.len());
        for p in &group {
            index += 1;
            let r = applier.apply(&p.cmd, &mut batch, &mut events);
            if let Err(e) = &r {
                assert!(
                    e.is_deterministic(),
                    "non-deterministic error during apply: {e}"
                );
            }
            results.push(r);
        }
        applier.commit(index, batch);
        if !events.is_empty() {
            publish(events);
        }
        for (p, r) in group.drain(..).zip(results) {
            let _ = p.done.send(r);
        }
    }
}
