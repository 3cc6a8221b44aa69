//! The lock of an object-store prefix: a lock object taken by a conditional create, held by a
//! lease that a heartbeat renews.
//!
//! `PREFIX/.zephr-etl.lock` is created with `If-None-Match: *` (S3, and the equivalent
//! preconditions on GCS and Azure), so of two runs that start together exactly one gets it.
//! It holds the run's tag, host, pid and an expiry time (`lease` after the last renewal). A
//! heartbeat thread renews it every `renew_every` with a conditional replace (`If-Match` on the
//! ETag it last wrote): a run whose lock was taken over finds out at its next renewal. A run
//! that finds the lock expired (its holder was killed, or lost its network) takes it over with
//! the same conditional replace, so of two runs that both see it expired only one wins.
//! Before writing the manifest, the commit renews the lease once more and stops if that fails.
//! A conditional PUT whose answer was lost is decided by reading the lock back: a create,
//! takeover or renewal that landed carries this run's tag (and exact bytes), so a retry that
//! is refused by the very lock it wrote does not lock the run out of its own prefix.
//!
//! Guaranteed: no two live runs that renew on time hold the lock together; a killed run's lock
//! is free `lease` after its last renewal; a run never commits after it knows it lost the lock.
//! Not guaranteed: exclusion when hosts' clocks differ by more than the lease, or when a holder
//! stalls (suspended, swapped out) for longer than the lease between its last renewal and its
//! manifest write, a window of one request. Releasing reads the lock and deletes it if it is
//! still this run's; a takeover between the two requests would be undone (stores have no
//! conditional delete that `object_store` exposes), which can only happen after this run's
//! lease had expired.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use object_store::{PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::upload::Shared;
use super::{DestError, DestLock};
use zephr_core::timestamp::{iso_utc, now_ms};
use zephr_store::CloudError;

/// The lock object's name under the prefix.
pub(crate) const LOCK_NAME: &str = ".zephr-etl.lock";

/// What the lock object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockBody {
    tool: String,
    run: String,
    host: String,
    pid: u32,
    /// Milliseconds since the Unix epoch after which the lock may be taken over.
    expires_ms: u64,
    /// The same, readable.
    expires: String,
}

/// The lease as the holder knows it: the ETag it last wrote, or why it lost the lock.
pub struct LeaseState {
    /// The version (ETag, and generation on GCS) of the lock this run last wrote.
    etag: Mutex<Result<UpdateVersion, String>>,
    run: String,
    lease: Duration,
    shared: Arc<Shared>,
}

impl LeaseState {
    /// Renews the lease now (the commit does this just before its manifest). An error means
    /// the lock is no longer this run's, or could not be confirmed to be.
    pub(crate) fn renew(&self) -> Result<(), DestError> {
        let mut etag = self.etag.lock().unwrap_or_else(|e| e.into_inner());
        let current = match &*etag {
            Ok(tag) => tag.clone(),
            Err(why) => return Err(self.lost(why.clone())),
        };
        let body = lock_body(&self.run, self.lease);
        match put(&self.shared, body.clone(), update(current)) {
            Ok(Some(new)) => {
                *etag = Ok(new);
                Ok(())
            }
            Ok(None) => {
                // A store that gives no ETag cannot renew conditionally: say so, once.
                let why = "the store returned no ETag for the lock".to_string();
                *etag = Err(why.clone());
                Err(self.lost(why))
            }
            Err(object_store::Error::Precondition { .. }) => {
                // A retried renewal is refused by the very lock it wrote when the answer to
                // the first try was lost: the lock read back tells.
                if let Ok(Some(held)) = read_lock(&self.shared)
                    && held.bytes == body
                    && let Some(new) = held.etag
                {
                    *etag = Ok(new);
                    return Ok(());
                }
                let why = "it was taken over after this run's lease expired".to_string();
                *etag = Err(why.clone());
                Err(self.lost(why))
            }
            Err(e) => Err(DestError::Cloud(self.shared.store.error(
                "renew the lock",
                LOCK_NAME,
                e,
            ))),
        }
    }

    fn lost(&self, detail: String) -> DestError {
        DestError::Cloud(CloudError::LockLost {
            lock: self.shared.store.url.target(LOCK_NAME),
            detail,
        })
    }
}

/// The held lock: renewed in the background, released on drop.
pub struct ObjectLock {
    state: Arc<LeaseState>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl DestLock for ObjectLock {}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
        let held = self.state.etag.lock().map(|e| e.is_ok()).unwrap_or(false);
        if held {
            release(&self.state.shared, &self.state.run);
        }
    }
}

/// Takes the lock of the prefix for run `run`, or says who holds it and until when.
pub(crate) fn acquire(
    shared: &Arc<Shared>,
    run: &str,
    lease: Duration,
    renew_every: Duration,
) -> Result<(ObjectLock, Arc<LeaseState>), DestError> {
    let store = &shared.store;
    let lock_target = store.url.target(LOCK_NAME);
    let cloud = |action, e| DestError::Cloud(store.error(action, LOCK_NAME, e));
    // Bounded: each round either returns or saw the lock vanish or change under it.
    for _ in 0..5 {
        let etag = match put(shared, lock_body(run, lease), PutMode::Create) {
            Ok(etag) => Some(etag),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                let Some(held) = read_lock(shared)? else {
                    continue; // released meanwhile: try to create it again
                };
                if held.body.run == run {
                    // This run's own create: its answer was lost and the retry was refused.
                    Some(held.etag)
                } else {
                    take_over(shared, run, lease, held)?
                }
            }
            Err(e) => match read_lock(shared) {
                // The create landed though its answer was lost.
                Ok(Some(held)) if held.body.run == run => Some(held.etag),
                _ => return Err(cloud("create the lock", e)),
            },
        };
        // None: another run took it over first, or its holder renewed just now.
        let Some(etag) = etag else { continue };
        let state = Arc::new(LeaseState {
            etag: Mutex::new(
                etag.ok_or_else(|| "the store returned no ETag for the lock".to_string()),
            ),
            run: run.to_string(),
            lease,
            shared: shared.clone(),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let beat = state.clone();
        let heartbeat = std::thread::Builder::new()
            .name("zephr-etl-lease".into())
            .spawn(move || {
                // Renew until told to stop (the sender dropped) or the lock is lost.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(renew_every) {
                    if let Err(DestError::Cloud(CloudError::LockLost { .. })) = beat.renew() {
                        break;
                    }
                }
            })
            .map_err(|e| {
                DestError::Cloud(CloudError::Store {
                    action: "start the renewal of",
                    target: lock_target.clone(),
                    detail: e.to_string(),
                })
            })?;
        let lock = ObjectLock {
            state: state.clone(),
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        };
        return Ok((lock, state));
    }
    Err(DestError::Cloud(CloudError::Store {
        action: "take",
        target: lock_target,
        detail: "the lock object kept changing; another run is starting on this prefix".into(),
    }))
}

/// Another run's lock: refused while its lease lasts, taken over (conditionally on the ETag
/// read) once it expired. `Ok(None)` when another run changed it first.
fn take_over(
    shared: &Shared,
    run: &str,
    lease: Duration,
    held: LockRead,
) -> Result<Option<Option<UpdateVersion>>, DestError> {
    let store = &shared.store;
    let lock_target = store.url.target(LOCK_NAME);
    let holder = held.body;
    if now_ms() <= holder.expires_ms {
        return Err(DestError::Locked {
            dest: format!(
                "{} (run {} on {}, pid {}, holds {} until {}, and longer while it runs)",
                store.url.display(),
                holder.run,
                holder.host,
                holder.pid,
                lock_target,
                holder.expires
            ),
        });
    }
    let Some(etag) = held.etag else {
        return Err(DestError::Locked {
            dest: format!(
                "{} (its lock {} expired at {}, but the store gives no ETag to take it over \
                 safely: delete that object if run {} is dead)",
                store.url.display(),
                lock_target,
                holder.expires,
                holder.run
            ),
        });
    };
    let body = lock_body(run, lease);
    match put(shared, body.clone(), update(etag)) {
        Ok(etag) => Ok(Some(etag)),
        Err(object_store::Error::Precondition { .. }) => {
            // Lost answer to this very takeover, or another run was first.
            match read_lock(shared)? {
                Some(now) if now.bytes == body => Ok(Some(now.etag)),
                _ => Ok(None),
            }
        }
        Err(e) => Err(DestError::Cloud(store.error(
            "take over the lock",
            LOCK_NAME,
            e,
        ))),
    }
}

/// The lock object as read: what it says, its exact bytes and its ETag.
struct LockRead {
    body: LockBody,
    bytes: Vec<u8>,
    etag: Option<UpdateVersion>,
}

/// The lock object, `None` when there is none.
fn read_lock(shared: &Shared) -> Result<Option<LockRead>, DestError> {
    let store = &shared.store;
    let Some(fetched) = store.get("read the lock", LOCK_NAME)? else {
        return Ok(None);
    };
    let body = serde_json::from_slice::<LockBody>(&fetched.bytes).unwrap_or_else(|_| {
        // Not ours to read: treat it as a lock that lasts one default lease from its last
        // write, so a stray object cannot block the prefix forever.
        let expires_ms = u64::try_from(fetched.last_modified_ms).unwrap_or(0) + 120_000;
        LockBody {
            tool: "unknown".into(),
            run: "unknown".into(),
            host: "unknown".into(),
            pid: 0,
            expires_ms,
            expires: iso_utc(UNIX_EPOCH + Duration::from_millis(expires_ms)),
        }
    });
    Ok(Some(LockRead {
        body,
        bytes: fetched.bytes,
        etag: fetched.version,
    }))
}

/// Deletes the lock if it still is `run`'s.
fn release(shared: &Shared, run: &str) {
    if let Ok(Some(held)) = read_lock(shared)
        && held.body.run == run
    {
        let _ = shared.store.delete(LOCK_NAME);
    }
}

fn lock_body(run: &str, lease: Duration) -> Vec<u8> {
    let expires_ms = now_ms().saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
    let body = LockBody {
        tool: "zephr-etl".into(),
        run: run.into(),
        host: host_name(),
        pid: std::process::id(),
        expires_ms,
        expires: iso_utc(UNIX_EPOCH + Duration::from_millis(expires_ms)),
    };
    serde_json::to_vec_pretty(&body).unwrap_or_default()
}

fn update(version: UpdateVersion) -> PutMode {
    PutMode::Update(version)
}

/// One conditional PUT of the lock; the new version.
fn put(
    shared: &Shared,
    body: Vec<u8>,
    mode: PutMode,
) -> object_store::Result<Option<UpdateVersion>> {
    shared.store.put(LOCK_NAME, body, mode)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}
