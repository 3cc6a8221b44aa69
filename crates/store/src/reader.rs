//! An object as a sync [`Read`]: the body streams in as the pipeline reads it, one network
//! chunk at a time, so a 30 GB export in a bucket is never held whole nor copied to disk.

use std::io::{self, Read};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;

use super::store::{Store, StoreOptions};
use super::{CloudError, CloudUrl};

/// The body of one object, read as it arrives.
pub struct ObjectReader {
    store: Store,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    size: u64,
}

impl ObjectReader {
    /// Opens `url` (a key, not a prefix) for reading; fails at once when the bucket or the
    /// object does not exist or access is denied.
    pub fn open(url: &CloudUrl) -> Result<ObjectReader, CloudError> {
        Self::open_with(url, &StoreOptions::default())
    }

    /// [`open`](Self::open) with explicit store settings.
    pub fn open_with(url: &CloudUrl, options: &StoreOptions) -> Result<ObjectReader, CloudError> {
        let store = Store::connect(url, options)?;
        let path = store.path("");
        let client = store.client.clone();
        let result = store
            .runtime
            .block_on(async move { client.get(&path).await })
            .map_err(|e| store.error("read", "", e))?;
        let size = result.meta.size;
        Ok(ObjectReader {
            stream: result.into_stream(),
            store,
            chunk: Bytes::new(),
            size,
        })
    }

    /// The object's size in bytes (for progress).
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let next = self.store.runtime.block_on(self.stream.next());
            match next {
                None => return Ok(0),
                Some(Ok(bytes)) => self.chunk = bytes,
                Some(Err(e)) => {
                    let error = self.store.error("read", "", e);
                    return Err(io::Error::other(error));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}
