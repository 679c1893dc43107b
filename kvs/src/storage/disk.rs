//! Where a worker's log and cold tier live: files on disk ([`FileDisk`]), or memory that
//! can simulate a crash ([`MemDisk`], for tests and the deterministic simulation).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::StorageError;

/// One value to store in the cold tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdPut {
    /// The key.
    pub key: Bytes,
    /// The hash of the stored entry (for anti-entropy digests).
    pub hash: u64,
    /// The value, encoded.
    pub bytes: Vec<u8>,
    /// When the value expires (ms since the Unix epoch), if it was given a time to live.
    pub deadline: Option<u64>,
}

/// A key in the cold tier, as its index holds it (no value read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdKey {
    /// The key.
    pub key: Bytes,
    /// The hash of the stored entry.
    pub hash: u64,
    /// When the value expires, if it was given a time to live: so keys on disk are
    /// collected at expiry after a restart without reading every value.
    pub deadline: Option<u64>,
}

/// A worker's durable storage: an append-only log and a key-value cold tier. Keys are
/// never file names.
pub trait Disk: Send + std::fmt::Debug {
    /// Appends bytes to the log (durable only after [`log_sync`](Self::log_sync)).
    fn log_append(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    /// Makes everything appended so far durable.
    fn log_sync(&mut self) -> Result<(), StorageError>;
    /// The whole log, for recovery.
    fn log_read(&mut self) -> Result<Vec<u8>, StorageError>;
    /// Cuts the log to its first `len` bytes, durably.
    fn log_truncate(&mut self, len: u64) -> Result<(), StorageError>;
    /// A cold value, encoded.
    fn cold_get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Stores and removes cold values in one transaction; `durable` waits until it is on
    /// disk (and makes every earlier transaction durable too).
    fn cold_write(
        &mut self,
        puts: &[ColdPut],
        removes: &[Bytes],
        durable: bool,
    ) -> Result<(), StorageError>;
    /// Every cold key with its entry hash and deadline.
    fn cold_keys(&mut self) -> Result<Vec<ColdKey>, StorageError>;
}

const VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("values");
const HASHES: TableDefinition<&[u8], u64> = TableDefinition::new("hashes");
const DEADLINES: TableDefinition<&[u8], u64> = TableDefinition::new("deadlines");

/// A worker's files: `wal.log` (the write-ahead log) and `cold.redb` (the cold tier, a redb
/// database: values by key, their hashes in a second table so the key index loads
/// without reading values, and the deadlines of those given a time to live in a third).
pub struct FileDisk {
    dir: PathBuf,
    log: File,
    db: redb::Database,
}

impl std::fmt::Debug for FileDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDisk").field("dir", &self.dir).finish()
    }
}

fn engine(dir: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(format!("{}: {e}", dir.join("cold.redb").display()))
}

impl FileDisk {
    /// Opens (creating if absent) the files in `dir`; `cache_bytes` bounds the cold tier's
    /// page cache. Fails if another process has them open.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<FileDisk, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let log_path = dir.join("wal.log");
        let log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| StorageError::io(&log_path, e))?;
        let db = redb::Database::builder()
            .set_cache_size(cache_bytes)
            .create(dir.join("cold.redb"))
            .map_err(|e| engine(dir, e))?;
        let txn = db.begin_write().map_err(|e| engine(dir, e))?;
        {
            txn.open_table(VALUES).map_err(|e| engine(dir, e))?;
            txn.open_table(HASHES).map_err(|e| engine(dir, e))?;
            txn.open_table(DEADLINES).map_err(|e| engine(dir, e))?;
        }
        txn.commit().map_err(|e| engine(dir, e))?;
        Ok(FileDisk {
            dir: dir.to_path_buf(),
            log,
            db,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("wal.log")
    }
}

impl Disk for FileDisk {
    fn log_append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.log
            .write_all(bytes)
            .map_err(|e| StorageError::io(self.log_path(), e))
    }

    fn log_sync(&mut self) -> Result<(), StorageError> {
        self.log
            .sync_data()
            .map_err(|e| StorageError::io(self.log_path(), e))
    }

    fn log_read(&mut self) -> Result<Vec<u8>, StorageError> {
        let path = self.log_path();
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(bytes)
    }

    fn log_truncate(&mut self, len: u64) -> Result<(), StorageError> {
        // The file is in append mode: later writes land at the new end.
        self.log
            .set_len(len)
            .and_then(|()| self.log.sync_all())
            .map_err(|e| StorageError::io(self.log_path(), e))
    }

    fn cold_get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let dir = &self.dir;
        let txn = self.db.begin_read().map_err(|e| engine(dir, e))?;
        let table = txn.open_table(VALUES).map_err(|e| engine(dir, e))?;
        let value = table.get(key).map_err(|e| engine(dir, e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn cold_write(
        &mut self,
        puts: &[ColdPut],
        removes: &[Bytes],
        durable: bool,
    ) -> Result<(), StorageError> {
        let dir = &self.dir;
        let mut txn = self.db.begin_write().map_err(|e| engine(dir, e))?;
        let level = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        txn.set_durability(level).map_err(|e| engine(dir, e))?;
        {
            let mut values = txn.open_table(VALUES).map_err(|e| engine(dir, e))?;
            let mut hashes = txn.open_table(HASHES).map_err(|e| engine(dir, e))?;
            let mut deadlines = txn.open_table(DEADLINES).map_err(|e| engine(dir, e))?;
            for key in removes {
                values.remove(&key[..]).map_err(|e| engine(dir, e))?;
                hashes.remove(&key[..]).map_err(|e| engine(dir, e))?;
                deadlines.remove(&key[..]).map_err(|e| engine(dir, e))?;
            }
            for put in puts {
                let key = &put.key[..];
                values
                    .insert(key, &put.bytes[..])
                    .map_err(|e| engine(dir, e))?;
                hashes.insert(key, put.hash).map_err(|e| engine(dir, e))?;
                match put.deadline {
                    Some(at) => deadlines.insert(key, at),
                    None => deadlines.remove(key),
                }
                .map_err(|e| engine(dir, e))?;
            }
        }
        txn.commit().map_err(|e| engine(dir, e))
    }

    fn cold_keys(&mut self) -> Result<Vec<ColdKey>, StorageError> {
        let dir = &self.dir;
        let txn = self.db.begin_read().map_err(|e| engine(dir, e))?;
        let table = txn.open_table(HASHES).map_err(|e| engine(dir, e))?;
        let deadlines = txn.open_table(DEADLINES).map_err(|e| engine(dir, e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| engine(dir, e))? {
            let (k, h) = entry.map_err(|e| engine(dir, e))?;
            let deadline = deadlines.get(k.value()).map_err(|e| engine(dir, e))?;
            out.push(ColdKey {
                key: Bytes::copy_from_slice(k.value()),
                hash: h.value(),
                deadline: deadline.map(|d| d.value()),
            });
        }
        Ok(out)
    }
}

/// A stored cold value: its entry hash, encoding and deadline.
type Stored = (u64, Vec<u8>, Option<u64>);

#[derive(Debug, Default)]
struct MemDiskState {
    log: Vec<u8>,
    synced: usize,
    /// The cold tier as of the last durable transaction.
    cold: BTreeMap<Bytes, Stored>,
    /// Transactions since then, in order (`None`: a removal).
    pending: Vec<(Bytes, Option<Stored>)>,
}

impl MemDiskState {
    fn view(&self) -> BTreeMap<Bytes, Stored> {
        let mut view = self.cold.clone();
        for (k, v) in &self.pending {
            match v {
                Some(v) => view.insert(k.clone(), v.clone()),
                None => view.remove(k),
            };
        }
        view
    }
}

/// A disk in memory with crash semantics: what was not synced (log) or not committed
/// durably (cold tier) is lost by [`crash`](MemDisk::crash). Clones share one disk, so a
/// test keeps a handle while a worker owns another.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Arc<Mutex<MemDiskState>>,
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemDiskState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    /// Loses what a power cut would: the log after the last sync, except the first
    /// `keep_unsynced` bytes of it (a write partly on disk), and cold-tier transactions after
    /// the last durable one.
    pub fn crash(&self, keep_unsynced: usize) {
        self.with(|s| {
            let keep = s.synced + keep_unsynced.min(s.log.len() - s.synced);
            s.log.truncate(keep);
            s.synced = keep;
            s.pending.clear();
        });
    }

    /// Bytes in the log (synced or not).
    pub fn log_len(&self) -> usize {
        self.with(|s| s.log.len())
    }

    /// Changes the log's bytes in place (to test damaged logs).
    pub fn damage_log(&self, f: impl FnOnce(&mut Vec<u8>)) {
        self.with(|s| {
            f(&mut s.log);
            s.synced = s.synced.min(s.log.len());
        });
    }
}

impl Disk for MemDisk {
    fn log_append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.with(|s| s.log.extend_from_slice(bytes));
        Ok(())
    }

    fn log_sync(&mut self) -> Result<(), StorageError> {
        self.with(|s| s.synced = s.log.len());
        Ok(())
    }

    fn log_read(&mut self) -> Result<Vec<u8>, StorageError> {
        Ok(self.with(|s| s.log.clone()))
    }

    fn log_truncate(&mut self, len: u64) -> Result<(), StorageError> {
        self.with(|s| {
            s.log.truncate(usize::try_from(len).unwrap_or(usize::MAX));
            s.synced = s.log.len();
        });
        Ok(())
    }

    fn cold_get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.with(|s| s.view().get(key).map(|(_, v, _)| v.clone())))
    }

    fn cold_write(
        &mut self,
        puts: &[ColdPut],
        removes: &[Bytes],
        durable: bool,
    ) -> Result<(), StorageError> {
        self.with(|s| {
            for k in removes {
                s.pending.push((k.clone(), None));
            }
            for put in puts {
                let stored = (put.hash, put.bytes.clone(), put.deadline);
                s.pending.push((put.key.clone(), Some(stored)));
            }
            if durable {
                s.cold = s.view();
                s.pending.clear();
            }
        });
        Ok(())
    }

    fn cold_keys(&mut self) -> Result<Vec<ColdKey>, StorageError> {
        Ok(self.with(|s| {
            let view = s.view().into_iter();
            view.map(|(key, (hash, _, deadline))| ColdKey {
                key,
                hash,
                deadline,
            })
            .collect()
        }))
    }
}
