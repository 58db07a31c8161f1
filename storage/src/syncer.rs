//! Group commit: one thread fsyncs the write-ahead log for every caller that
//! queued since the previous fsync.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rocksdb::DB;

use crate::{Error, Result};

/// Runs once the data written before it was queued is on disk (or failed to get there).
pub type SyncCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// Bound on callbacks waiting for an fsync; a full queue makes callers wait (back-pressure).
const QUEUE: usize = 64 * 1024;

pub(crate) struct Syncer {
    tx: Option<SyncSender<SyncCallback>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the queue ends the thread after it served what was queued;
        // joining releases its handle on the database before the caller reopens it.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Syncer {
    pub(crate) fn start(db: Arc<DB>) -> Syncer {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("courier-wal-sync".into())
            .spawn(move || run(db, rx))
            .expect("spawn the WAL sync thread");
        Syncer { tx: Some(tx), thread: Some(thread) }
    }

    pub(crate) fn request(&self, done: SyncCallback) -> Result<()> {
        self.tx.as_ref().ok_or(Error::SyncerStopped)?.send(done).map_err(|_| Error::SyncerStopped)
    }
}

fn run(db: Arc<DB>, rx: Receiver<SyncCallback>) {
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv() {
        waiting.push(first);
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = db.flush_wal(true).map_err(|e| Error::Engine(e.into_string()));
        for done in waiting.drain(..) {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::Engine(e.to_string())),
            });
        }
    }
}
