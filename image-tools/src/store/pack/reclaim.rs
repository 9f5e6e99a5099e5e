//! Giving back the space of removed and replaced chunks: the packs mostly dead rewritten.

use super::*;

/// How much of a sealed pack still serves: for [`plan_reclaim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackUsage {
    pub pack: u64,
    pub len: u64,
    /// Bytes of its records that must survive a rewrite (live chunks, needed tombstones).
    pub live: u64,
}

/// Which sealed packs to rewrite: those at most half live (a pack with nothing live is simply
/// deleted). Pure. Rewriting a pack costs its live bytes once; a pack more than half live is left
/// until more of it is dead, so reclaiming never copies more than it frees.
pub fn plan_reclaim(packs: &[PackUsage]) -> Vec<u64> {
    let mut out: Vec<u64> = packs
        .iter()
        .filter(|p| p.len > 0 && p.live * 2 <= p.len)
        .map(|p| p.pack)
        .collect();
    out.sort_unstable();
    out
}

impl PackStore {
    /// Makes removals durable and frees the space of mostly-dead packs: each one's live records
    /// are copied into a new pack, which is made durable, then the old one is deleted. Readers are
    /// not blocked: one that looked a chunk up in an old pack reads it from the old file, still open.
    /// Returns the bytes freed on disk. Run it under the store lock: exclusive, or shared where
    /// the other writers only import (a daemon's own handle, `nightcast-image build`): another
    /// process's tombstone naming a record while it is moved would leave the moved copy live (a
    /// removal undone, or a replaced form kept beside the new one).
    pub fn reclaim(&self) -> Result<u64, StoreError> {
        let _m = lock(&self.maintenance)?;
        // Seal this handle's own pack, so that it too can be rewritten.
        if let Some(active) = lock(&self.appender)?.take() {
            self.seal_pack(active)?;
        }
        let (usage, plan) = {
            let state = self.read_state()?;
            let usage = usage_of(&state);
            (usage.clone(), plan_reclaim(&usage))
        };
        if plan.is_empty() {
            return Ok(0);
        }
        let doomed: HashSet<u64> = plan.iter().copied().collect();
        let mut out: Option<Active> = None;
        let mut moves: Vec<(ChunkId, Place, Loc)> = Vec::new();
        let mut freed = 0u64;
        let copied = self.copy_live(&plan, &doomed, &mut out, &mut moves);
        let new_pack = match (copied, out) {
            (Ok(()), None) => None,
            (Ok(()), Some(active)) => {
                let (pack, file, len) = (active.pack, active.file.clone(), active.len);
                let tombstones = active
                    .entries
                    .iter()
                    .filter_map(|e| e.target.map(|t| (e.id, t)))
                    .collect();
                if let Err(e) = active.seal(&self.packs_dir) {
                    self.discard(pack);
                    return Err(e);
                }
                Some((pack, file, len, tombstones))
            }
            // A full disk: the copies go, the packs they came from stay as they were.
            (Err(e), out) => {
                if let Some(active) = out {
                    let pack = active.pack;
                    drop(active);
                    self.discard(pack);
                }
                return Err(e);
            }
        };
        {
            let mut state = self.write_state()?;
            if let Some((pack, file, len, tombstones)) = new_pack {
                state.packs.insert(
                    pack,
                    Pack {
                        file,
                        len,
                        sealed: true,
                        tombstones,
                    },
                );
            }
            for (id, old, new) in moves {
                if let Some(l) = state.index.get_mut(&id) {
                    if l.place == old {
                        *l = new;
                    }
                }
            }
            for pack in &plan {
                if let Some(p) = state.packs.remove(pack) {
                    freed += p.len;
                }
            }
        }
        for &pack in &plan {
            self.delete_pack(pack)?;
        }
        durable::sync_dir(&self.packs_dir).map_err(StoreError::io(&self.packs_dir))?;
        let kept: u64 = usage
            .iter()
            .filter(|u| doomed.contains(&u.pack))
            .map(|u| u.live)
            .sum();
        tracing::info!(
            packs = plan.len(),
            freed = freed.saturating_sub(kept),
            "rewrote mostly-dead packs"
        );
        Ok(freed.saturating_sub(kept))
    }

    /// Copies the live records of `plan`'s packs (and the tombstones still needed) into `out`.
    fn copy_live(
        &self,
        plan: &[u64],
        doomed: &HashSet<u64>,
        out: &mut Option<Active>,
        moves: &mut Vec<(ChunkId, Place, Loc)>,
    ) -> Result<(), StoreError> {
        for &pack in plan {
            let (file, chunks, tombstones) = {
                let state = self.read_state()?;
                let Some(p) = state.packs.get(&pack) else {
                    continue;
                };
                let chunks: Vec<(ChunkId, Loc)> = state
                    .index
                    .iter()
                    .filter(|(_, l)| l.place.pack == pack)
                    .map(|(id, l)| (*id, *l))
                    .collect();
                let tombstones: Vec<(ChunkId, Place)> = p
                    .tombstones
                    .iter()
                    .filter(|(_, t)| state.packs.contains_key(&t.pack) && !doomed.contains(&t.pack))
                    .copied()
                    .collect();
                (p.file.clone(), chunks, tombstones)
            };
            let path = pack_path(&self.packs_dir, pack);
            for (id, loc) in chunks {
                let mut body = vec![0u8; loc.body_len as usize];
                file.read_exact_at(&mut body, loc.place.offset + RECORD_HEADER as u64)
                    .map_err(StoreError::io(&path))?;
                let target = out_pack(out, &self.packs_dir, &self.tmp)?;
                let place = target.append(Kind::Chunk, &id, &[&body], &self.packs_dir)?;
                moves.push((
                    id,
                    loc.place,
                    Loc {
                        place,
                        body_len: loc.body_len,
                    },
                ));
            }
            for (id, t) in tombstones {
                let target = out_pack(out, &self.packs_dir, &self.tmp)?;
                target.append(
                    Kind::Tombstone,
                    &id,
                    &[&record::tombstone_body(t)],
                    &self.packs_dir,
                )?;
            }
        }
        Ok(())
    }

    /// Deletes a pack's files (either may be gone already).
    fn delete_pack(&self, pack: u64) -> Result<(), StoreError> {
        for path in [
            pack_path(&self.packs_dir, pack),
            index_path(&self.packs_dir, pack),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path)(e)),
            }
        }
        Ok(())
    }

    /// Deletes a pack this handle began and could not finish (it holds only copies).
    fn discard(&self, pack: u64) {
        if let Err(e) = self.delete_pack(pack) {
            tracing::warn!(error = %e, "cannot delete an unfinished copy of live chunks");
        }
    }
}

fn out_pack<'a>(
    out: &'a mut Option<Active>,
    dir: &Path,
    tmp: &Path,
) -> Result<&'a mut Active, StoreError> {
    if out.is_none() {
        *out = Some(Active::create(dir, tmp)?);
    }
    out.as_mut()
        .ok_or_else(|| StoreError::Layout("no pack to append to".into()))
}

/// Each sealed pack's usage: live chunk bytes, and tombstones still needed (their target pack
/// exists).
fn usage_of(state: &State) -> Vec<PackUsage> {
    let mut live: HashMap<u64, u64> = HashMap::new();
    for loc in state.index.values() {
        *live.entry(loc.place.pack).or_default() += RECORD_HEADER as u64 + u64::from(loc.body_len);
    }
    state
        .packs
        .iter()
        .filter(|(_, p)| p.sealed)
        .map(|(&pack, p)| {
            let needed = p
                .tombstones
                .iter()
                .filter(|(_, t)| state.packs.contains_key(&t.pack))
                .count() as u64;
            PackUsage {
                pack,
                len: p.len,
                live: live.get(&pack).copied().unwrap_or(0)
                    + needed * (RECORD_HEADER as u64 + u64::from(record::TOMBSTONE_LEN)),
            }
        })
        .collect()
}
