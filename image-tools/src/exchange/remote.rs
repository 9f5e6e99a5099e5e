//! `RemoteStore`: a blocking, read-only `ChunkStore` over a connection.

use super::*;

/// A read-only [`ChunkStore`] over a connection. Its methods block: call them from blocking
/// threads (`spawn_blocking`), never from inside the async runtime.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    conn: Connection,
    runtime: tokio::runtime::Handle,
}

impl RemoteStore {
    pub fn new(conn: Connection, runtime: tokio::runtime::Handle) -> RemoteStore {
        RemoteStore { conn, runtime }
    }
}

pub(super) fn remote_io(e: ExchangeError) -> StoreError {
    StoreError::Io {
        path: "remote".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl ChunkStore for RemoteStore {
    fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let bits = self
            .runtime
            .block_on(self.conn.has(&[*id]))
            .map_err(remote_io)?;
        Ok(bits.first().copied().unwrap_or(false))
    }

    fn get(&self, id: &ChunkId) -> Result<VerifiedChunk, StoreError> {
        let mut out: Option<Result<VerifiedChunk, StoreError>> = None;
        self.runtime
            .block_on(self.conn.get_chunks(&[*id], |r, _| {
                out = Some(match r {
                    Received::Chunk(c) => Ok(c),
                    Received::Lacking(id) | Received::NotYet { id, .. } => {
                        Err(StoreError::Missing(id))
                    }
                    Received::Lied { id, reason } => Err(StoreError::Invalid {
                        id,
                        path: None,
                        reason: crate::chunk::ChunkError::Decompress {
                            declared: 0,
                            detail: format!("sent by {}: {reason}", self.conn.peer()),
                        },
                    }),
                });
                Ok(())
            }))
            .map_err(remote_io)?;
        out.unwrap_or(Err(StoreError::Missing(*id)))
    }

    fn put(&self, _chunk: &VerifiedChunk) -> Result<(), StoreError> {
        Err(StoreError::Layout("a remote store is read-only".into()))
    }

    fn remove(&self, _id: &ChunkId) -> Result<(), StoreError> {
        Err(StoreError::Layout("a remote store is read-only".into()))
    }

    fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        Err(StoreError::Layout(
            "a remote store cannot list its chunks".into(),
        ))
    }

    fn size(&self) -> Result<StoreSize, StoreError> {
        Err(StoreError::Layout(
            "a remote store cannot report its size".into(),
        ))
    }
}
