//! A file streamed into an object store: a sync [`Write`] over a multipart upload.
//!
//! Bytes collect in one buffer of the part size (5 MiB by default, S3's smallest, growing for
//! very large objects); each full buffer is handed to the store's runtime as one part and a
//! new buffer starts, so the writer never waits for the network unless the destination already
//! has its limit of parts in flight (a semaphore shared by all the files of a run). Memory is therefore bounded by (open files + parts in
//! flight) x part size, whatever the file's size, and no local copy is made. A file smaller
//! than one part is sent with a single PUT when it is finished, and never starts a multipart
//! upload. SHA-256 and the byte count are computed as the bytes pass.
//!
//! Every upload in progress and every object completed but not yet committed is recorded in
//! `Uploads`, so a failed run can abort the ones still open and delete the finished ones.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{MultipartId, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{DestError, FinishedFile, StagedFile};
use zephr_store::CloudError;
use zephr_store::store::Store;

/// What a run has under way in the store: open multipart uploads and finished objects not yet
/// committed.
#[derive(Default)]
pub(crate) struct Uploads {
    open: HashMap<u64, (Path, MultipartId)>,
    finished: Vec<Path>,
    next: u64,
}

/// The store and the limits that every file of a run shares.
pub struct Shared {
    /// The connected store; its URL's key is the destination prefix every name is under.
    pub store: Store,
    /// Bytes per part: at least 5 MiB (S3's minimum for all parts but the last).
    pub part_size: usize,
    /// Parts in flight across all files of the run.
    permits: Arc<Semaphore>,
    uploads: Mutex<Uploads>,
}

impl Shared {
    /// Shares `store` among a run's files, with parts of `part_size` bytes and at most
    /// `parts_in_flight` of them uploading at once (each at least 1).
    pub fn new(store: Store, part_size: usize, parts_in_flight: usize) -> Shared {
        Shared {
            store,
            part_size: part_size.max(1),
            permits: Arc::new(Semaphore::new(parts_in_flight.max(1))),
            uploads: Mutex::new(Uploads::default()),
        }
    }

    fn uploads(&self) -> MutexGuard<'_, Uploads> {
        // A writer thread that panicked cannot leave the lists half-changed: every change is
        // one insert or remove. Go on with them.
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Objects finished by this run and not yet committed.
    pub fn finished(&self) -> Vec<Path> {
        self.uploads().finished.clone()
    }

    /// The commit made the finished objects part of the dataset: a later discard keeps them.
    pub fn forget_finished(&self) {
        self.uploads().finished.clear();
    }

    /// A failed run: aborts every open multipart upload and deletes every finished object.
    /// Best effort: what cannot be removed now is named by the run's record, and the next
    /// run's recovery deletes it. Whether everything went.
    pub fn discard_all(&self) -> bool {
        let (open, finished) = {
            let mut uploads = self.uploads();
            let open: Vec<_> = uploads.open.drain().map(|(_, v)| v).collect();
            (open, std::mem::take(&mut uploads.finished))
        };
        let client = self.store.client.clone();
        self.store.runtime.block_on(async move {
            let mut all = true;
            for (path, id) in &open {
                all &= client.abort_multipart(path, id).await.is_ok();
            }
            for path in &finished {
                all &= matches!(
                    client.delete(path).await,
                    Ok(()) | Err(object_store::Error::NotFound { .. })
                );
            }
            all
        })
    }
}

/// One object being written.
pub struct ObjectUpload {
    shared: Arc<Shared>,
    /// The final name relative to the destination's prefix.
    name: String,
    path: Path,
    buffer: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
    multipart: Option<Multipart>,
}

struct Multipart {
    token: u64,
    id: MultipartId,
    parts: Vec<Part>,
}

/// A part on its way, or uploaded.
enum Part {
    Sent(JoinHandle<object_store::Result<PartId>>),
    Done(PartId),
}

fn error(shared: &Shared, name: &str, action: &'static str, e: object_store::Error) -> DestError {
    DestError::Cloud(shared.store.error(action, name, e))
}

fn join_error(e: tokio::task::JoinError) -> object_store::Error {
    object_store::Error::Generic {
        store: "upload",
        source: Box::new(e),
    }
}

impl ObjectUpload {
    /// An upload of `name` through `shared`'s store, not started until the first part is full.
    pub fn new(shared: Arc<Shared>, name: String) -> ObjectUpload {
        let path = shared.store.path(&name);
        ObjectUpload {
            shared,
            name,
            path,
            buffer: Vec::new(),
            hasher: Sha256::new(),
            bytes: 0,
            multipart: None,
        }
    }

    fn error(&self, action: &'static str, e: object_store::Error) -> DestError {
        error(&self.shared, &self.name, action, e)
    }

    /// The size of the next part: the configured size for the first 1,000 parts, then doubling
    /// every 1,000 (up to 16x). Small parts keep memory low for the usual file; growing ones let
    /// a single object pass S3's limit of 10,000 parts (10,000 x 5 MiB is only 48 GiB).
    fn part_size(&self) -> usize {
        let sent = self.multipart.as_ref().map_or(0, |m| m.parts.len());
        self.shared.part_size << (sent / 1000).min(4)
    }

    /// Hands the buffer to the runtime as the next part, starting the upload on the first.
    fn send_part(&mut self) -> Result<(), DestError> {
        let store = &self.shared.store;
        if self.multipart.is_none() {
            let client = store.client.clone();
            let path = self.path.clone();
            let id = store
                .runtime
                .block_on(async move { client.create_multipart(&path).await })
                .map_err(|e| self.error("start the upload of", e))?;
            let mut uploads = self.shared.uploads();
            let token = uploads.next;
            uploads.next += 1;
            uploads.open.insert(token, (self.path.clone(), id.clone()));
            drop(uploads);
            self.multipart = Some(Multipart {
                token,
                id,
                parts: Vec::new(),
            });
        }
        // Waits here only while the run's limit of parts is in flight: the bound on memory.
        let permits = self.shared.permits.clone();
        let permit = store
            .runtime
            .block_on(permits.acquire_owned())
            .map_err(|_| {
                DestError::Cloud(CloudError::Store {
                    action: "upload",
                    target: store.url.target(&self.name),
                    detail: "the upload threads stopped".into(),
                })
            })?;
        let payload = PutPayload::from(std::mem::take(&mut self.buffer));
        let Some(multipart) = self.multipart.as_mut() else {
            unreachable!("started above")
        };
        let client = store.client.clone();
        let path = self.path.clone();
        let id = multipart.id.clone();
        let index = multipart.parts.len();
        multipart
            .parts
            .push(Part::Sent(store.runtime.spawn(async move {
                let _permit = permit;
                client.put_part(&path, &id, index, payload).await
            })));
        // A part that already failed (after its retries) stops the writer now, not at finish.
        for i in 0..multipart.parts.len() {
            if let Part::Sent(handle) = &mut multipart.parts[i]
                && handle.is_finished()
            {
                let part = store
                    .runtime
                    .block_on(handle)
                    .map_err(join_error)
                    .and_then(|r| r);
                match part {
                    Ok(part) => multipart.parts[i] = Part::Done(part),
                    Err(e) => return Err(error(&self.shared, &self.name, "upload a part of", e)),
                }
            }
        }
        Ok(())
    }

    /// Aborts the multipart upload, if one was started (failure or drop).
    fn abort(&mut self) {
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        for part in &multipart.parts {
            if let Part::Sent(handle) = part {
                handle.abort();
            }
        }
        self.shared.uploads().open.remove(&multipart.token);
        let client = self.shared.store.client.clone();
        let path = self.path.clone();
        let _ = self
            .shared
            .store
            .runtime
            .block_on(async move { client.abort_multipart(&path, &multipart.id).await });
    }

    fn complete(&mut self) -> Result<(), DestError> {
        let store = &self.shared.store;
        let Some(multipart) = self.multipart.as_mut() else {
            // Smaller than one part: one PUT, no multipart upload at all.
            let payload = PutPayload::from(std::mem::take(&mut self.buffer));
            let client = store.client.clone();
            let path = self.path.clone();
            store
                .runtime
                .block_on(async move { client.put(&path, payload).await })
                .map_err(|e| self.error("upload", e))?;
            self.shared.uploads().finished.push(self.path.clone());
            return Ok(());
        };
        let sent = std::mem::take(&mut multipart.parts);
        let client = store.client.clone();
        let path = self.path.clone();
        let id = multipart.id.clone();
        let result = store.runtime.block_on(async move {
            let mut parts = Vec::with_capacity(sent.len());
            for part in sent {
                match part {
                    Part::Done(part) => parts.push(part),
                    Part::Sent(handle) => match handle.await.map_err(join_error) {
                        Ok(Ok(part)) => parts.push(part),
                        Ok(Err(e)) | Err(e) => return Err(("upload a part of", e)),
                    },
                }
            }
            client
                .complete_multipart(&path, &id, parts)
                .await
                .map_err(|e| ("complete the upload of", e))
        });
        match result {
            Ok(_) => {
                let token = multipart.token;
                self.multipart = None;
                let mut uploads = self.shared.uploads();
                uploads.open.remove(&token);
                uploads.finished.push(self.path.clone());
                Ok(())
            }
            Err((action, e)) => Err(self.error(action, e)),
        }
    }
}

impl Write for ObjectUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let part_size = self.part_size();
        let n = buf.len().min(part_size - self.buffer.len());
        if self.buffer.capacity() < self.buffer.len() + n {
            // Grow by doubling up to one part, never past it: small files stay small.
            let want = (self.buffer.len() + n)
                .max(self.buffer.capacity() * 2)
                .min(part_size);
            self.buffer.reserve_exact(want - self.buffer.len());
        }
        self.buffer.extend_from_slice(&buf[..n]);
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.buffer.len() == part_size {
            self.send_part().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts are sent when full; an object exists only once finished.
        Ok(())
    }
}

impl StagedFile for ObjectUpload {
    fn finish(mut self: Box<Self>) -> Result<FinishedFile, DestError> {
        if self.multipart.is_some() && !self.buffer.is_empty() {
            // The last part may be smaller than the others.
            self.send_part()?;
        }
        if let Err(e) = self.complete() {
            self.abort();
            return Err(e);
        }
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok(FinishedFile {
            name: self.name.clone(),
            bytes: self.bytes,
            sha256,
        })
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        // Dropped unfinished (a failure, a panic): the parts sent so far must not linger.
        self.abort();
    }
}
