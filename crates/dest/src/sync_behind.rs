//! Syncing behind the writer: an output file is made durable while it is still being written.
//!
//! Every output is fsynced before it is renamed into place. On the virtual disks this tool
//! mostly runs on, that fsync costs about a millisecond per megabyte written since the last
//! one, however early the kernel began writing the pages back: the host keeps the data in its
//! own cache until the guest asks for a flush. Left to the end, a run that writes 260 MB sat
//! idle for a quarter of a second waiting for it (`strace -T` shows a 0.25 s `fsync`). So each
//! writer hands its file to a background thread for an `fdatasync` every [`SYNC_EVERY`] bytes,
//! one at a time, while it goes on writing; the final fsync then has almost nothing left.
//!
//! An error from a background sync is not dropped: the kernel reports a writeback error once
//! per open file, so it is kept and returned by the next [`SyncBehind::progress`] or by
//! [`SyncBehind::finish`], and the run fails as it would have at the final fsync. Dropping a
//! `SyncBehind` without `finish` (a failed run) does not wait: the sync in flight ends on its
//! own, holding its own handle of the file, which the failed run deletes anyway.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Bytes written between two background syncs of one file.
pub(crate) const SYNC_EVERY: u64 = 8 << 20;

/// The background syncs of one output file.
pub(crate) struct SyncBehind {
    /// The file, shared with the sync in flight (`None` if it could not be shared: then the
    /// final fsync does all the work, as it would without this).
    file: Option<Arc<File>>,
    in_flight: Option<JoinHandle<io::Result<()>>>,
    /// The file's size when the last background sync was due (and started, unless a thread
    /// could not be had).
    synced_to: u64,
}

impl SyncBehind {
    /// Background syncs for `file`, which the caller goes on writing through its own handle.
    pub fn new(file: &File) -> SyncBehind {
        SyncBehind {
            file: file.try_clone().ok().map(Arc::new),
            in_flight: None,
            synced_to: 0,
        }
    }

    /// Tells how many bytes the file holds now (written to the kernel, not just buffered).
    /// Starts a sync when [`SYNC_EVERY`] more have arrived and none is in flight; never waits.
    pub fn progress(&mut self, written: u64) -> io::Result<()> {
        if written.saturating_sub(self.synced_to) < SYNC_EVERY {
            return Ok(());
        }
        if self
            .in_flight
            .as_ref()
            .is_some_and(|sync| !sync.is_finished())
        {
            return Ok(());
        }
        self.join()?;
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        // Failing to start a thread only means the final fsync does this work.
        self.in_flight = thread::Builder::new()
            .name("zephr-etl-sync".into())
            .spawn(move || file.sync_data())
            .ok();
        self.synced_to = written;
        Ok(())
    }

    /// Waits for the sync in flight, if any, and returns its error.
    pub fn finish(mut self) -> io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.in_flight.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("a background fsync thread panicked")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn syncs_in_the_background_and_the_file_is_unchanged() {
        let mut file = tempfile::tempfile().unwrap();
        let mut behind = SyncBehind::new(&file);
        let chunk = vec![b'x'; 1 << 20];
        let mut written = 0u64;
        let mut started = 0;
        for _ in 0..(3 * SYNC_EVERY) >> 20 {
            file.write_all(&chunk).unwrap();
            written += chunk.len() as u64;
            let before = behind.synced_to;
            behind.progress(written).unwrap();
            if behind.synced_to != before {
                started += 1;
                assert!(behind.synced_to - before >= SYNC_EVERY);
            }
        }
        assert!(
            started >= 1,
            "no background sync started in three SYNC_EVERY"
        );
        behind.finish().unwrap();
        let mut back = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len() as u64, written);
        assert!(back.iter().all(|&b| b == b'x'));
    }

    /// `/dev/null` refuses fsync (EINVAL): the background failure must surface, not vanish.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_background_sync_is_reported() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let mut behind = SyncBehind::new(&file);
        behind.progress(SYNC_EVERY).unwrap();
        assert!(behind.in_flight.is_some());
        let error = behind.finish().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
    }

    #[test]
    fn no_sync_below_the_threshold() {
        let file = tempfile::tempfile().unwrap();
        let mut behind = SyncBehind::new(&file);
        behind.progress(SYNC_EVERY - 1).unwrap();
        assert!(behind.in_flight.is_none());
        assert_eq!(behind.synced_to, 0);
        behind.progress(SYNC_EVERY).unwrap();
        assert_eq!(behind.synced_to, SYNC_EVERY);
        behind.finish().unwrap();
    }
}
