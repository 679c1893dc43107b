//! The node's data dir: its layout, and how many times it has been started.

use std::path::Path;

use serde::Deserialize;

use crate::error::KvsError;

/// The node's data dir: which layout it has, and how often it has been started.
#[derive(serde::Serialize, Deserialize)]
pub(super) struct DirMeta {
    threads: usize,
    incarnation: u64,
}

/// Reads and bumps the data dir's incarnation; refuses a dir written with another number
/// of workers (their keys would be on the wrong workers).
pub(super) fn bump_incarnation(dir: &Path, threads: usize, disk: bool) -> Result<u64, KvsError> {
    std::fs::create_dir_all(dir).map_err(|e| KvsError::io(dir, e))?;
    let path = dir.join("node.toml");
    let mut meta = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<DirMeta>(&text)
            .map_err(|e| KvsError::Config(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirMeta {
            threads,
            incarnation: 0,
        },
        Err(e) => return Err(KvsError::io(&path, e)),
    };
    if disk && meta.threads != threads && dir.join("worker-0").exists() {
        return Err(KvsError::Config(format!(
            "{} holds the data of {} workers; start the node with --threads {} (keys are placed by worker)",
            dir.display(),
            meta.threads,
            meta.threads
        )));
    }
    meta.threads = threads;
    meta.incarnation += 1;
    let text = toml::to_string(&meta).map_err(|e| KvsError::Config(e.to_string()))?;
    let tmp = dir.join("node.toml.tmp");
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            use std::io::Write as _;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| KvsError::io(&path, e))?;
    Ok(meta.incarnation)
}
