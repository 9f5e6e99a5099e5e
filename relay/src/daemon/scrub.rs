//! The scrub: every cached chunk re-read at a bounded rate; a corrupt one is dropped (and so
//! fetched again).

use std::sync::Arc;
use std::time::Duration;

use image_tools::{ChunkStore, StoreError};
use tokio_util::sync::CancellationToken;

use super::Relay;

pub(super) async fn scrub_task(r: Arc<Relay>, shutdown: CancellationToken) {
    let rate = r.cfg.scrub.mib_per_sec as f64 * (1 << 20) as f64;
    if rate <= 0.0 {
        return;
    }
    loop {
        let ids = {
            let rr = r.clone();
            match tokio::task::spawn_blocking(move || rr.store.ids()).await {
                Ok(Ok(ids)) => ids,
                _ => Vec::new(),
            }
        };
        let (mut checked, mut bad) = (0u64, 0u64);
        for batch in ids.chunks(32) {
            let rr = r.clone();
            let batch = batch.to_vec();
            let n = batch.len() as u64;
            let read = tokio::task::spawn_blocking(move || {
                let (mut bytes, mut bad) = (0u64, 0u64);
                for id in batch {
                    match rr.store.get(&id) {
                        Ok(c) => bytes += c.stored_len() as u64,
                        Err(StoreError::Invalid { reason, .. }) => {
                            rr.drop_corrupt(&id, &reason.to_string());
                            bad += 1;
                        }
                        Err(_) => {}
                    }
                }
                (bytes, bad)
            })
            .await
            .unwrap_or((0, 0));
            checked += n;
            bad += read.1;
            r.stat(|s| {
                s.scrub_checked_chunks += n;
                s.scrub_corrupt_chunks += read.1;
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs_f64(read.0 as f64 / rate)) => {}
            }
        }
        tracing::info!(checked, corrupt = bad, "scrub pass done");
        r.stat(|s| s.scrub_passes += 1);
        let pause = Duration::from_secs_f64(r.cfg.scrub.every_hours * 3600.0)
            .max(Duration::from_millis(100));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
