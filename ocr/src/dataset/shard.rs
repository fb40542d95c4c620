//! Output shards. Every file of a shard is written under a hidden temporary name and renamed
//! into place when the shard is complete, its `_stats.json` last: a shard whose stats file
//! exists is complete, anything else is redone from scratch on the next run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::filters::FILTER_NAMES;
use super::sample::Outcome;
use crate::DatasetError;

/// Counts for one shard or a whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Inputs looked at.
    pub seen: u64,
    /// Samples written to the shards.
    pub kept: u64,
    /// Rejections by the first filter each rejected sample failed.
    pub rejected: BTreeMap<String, u64>,
    /// Inputs that could not be processed (listed in `errors.jsonl`).
    pub errors: u64,
    /// Errors by kind (`truncated`, `not_an_image`, …).
    pub error_kinds: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            seen: 0,
            kept: 0,
            // Every filter is listed, also with no rejections.
            rejected: FILTER_NAMES.iter().map(|f| (f.to_string(), 0)).collect(),
            errors: 0,
            error_kinds: BTreeMap::new(),
        }
    }
}

impl Stats {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub(crate) fn add(&mut self, other: &Stats) {
        self.seen += other.seen;
        self.kept += other.kept;
        self.errors += other.errors;
        for (k, v) in &other.rejected {
            *self.rejected.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
    }
}

/// File names of shard `n`.
pub(crate) struct ShardFiles {
    pub tar: PathBuf,
    pub index: PathBuf,
    pub errors: PathBuf,
    pub planner: PathBuf,
    pub stats: PathBuf,
}

impl ShardFiles {
    pub fn new(dir: &Path, shard: usize) -> Self {
        let name = |suffix: &str| dir.join(format!("{shard:05}{suffix}"));
        ShardFiles {
            tar: name(".tar"),
            index: name(".jsonl"),
            errors: name("_errors.jsonl"),
            planner: name("_planner.jsonl"),
            stats: name("_stats.json"),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.stats.is_file()
    }
}

/// The hidden name a file is written under until its shard is complete.
pub(crate) fn partial(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

fn create(path: &Path) -> Result<BufWriter<File>, DatasetError> {
    // A leftover partial file (of a killed run) is unlinked rather than truncated: a process
    // still holding it open then writes to a file no longer in the folder, never into this one.
    let _ = std::fs::remove_file(path);
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| DatasetError::io(path, e))
}

/// Flushes, syncs and renames a finished partial file into place.
fn commit(mut w: BufWriter<File>, path: &Path) -> Result<(), DatasetError> {
    let tmp = partial(path);
    w.flush().map_err(|e| DatasetError::io(&tmp, e))?;
    let file = w
        .into_inner()
        .map_err(|e| DatasetError::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| DatasetError::io(&tmp, e))?;
    still_ours(&file, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| DatasetError::io(path, e))
}

/// Refuses to rename a partial file that another process replaced: two processes building
/// the same shard (a queued shard given to a second worker while the first, cut off from the
/// queue, still builds it) must not put the other's unfinished file into place.
#[cfg(unix)]
fn still_ours(file: &File, tmp: &Path) -> Result<(), DatasetError> {
    use std::os::unix::fs::MetadataExt;
    let ours = file.metadata().map_err(|e| DatasetError::io(tmp, e))?;
    let there = std::fs::metadata(tmp).map_err(|e| DatasetError::io(tmp, e))?;
    if (ours.dev(), ours.ino()) == (there.dev(), there.ino()) {
        Ok(())
    } else {
        Err(DatasetError::io(
            tmp,
            std::io::Error::other("replaced by another process writing the same shard"),
        ))
    }
}

#[cfg(not(unix))]
fn still_ours(_: &File, _: &Path) -> Result<(), DatasetError> {
    Ok(())
}

/// Writes `bytes` to `path` through a partial file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    let mut w = create(&partial(path))?;
    w.write_all(bytes).map_err(|e| DatasetError::io(path, e))?;
    commit(w, path)
}

/// One shard being written.
pub(crate) struct ShardWriter {
    pub shard: usize,
    files: ShardFiles,
    tar: tar::Builder<BufWriter<File>>,
    index: BufWriter<File>,
    errors: BufWriter<File>,
    planner: Option<BufWriter<File>>,
    stats: Stats,
    /// Inputs assigned to the shard; it is complete when all are written.
    expected: u64,
}

impl ShardWriter {
    pub fn create(
        dir: &Path,
        shard: usize,
        expected: u64,
        export_planner: bool,
    ) -> Result<Self, DatasetError> {
        let files = ShardFiles::new(dir, shard);
        let mut tar = tar::Builder::new(create(&partial(&files.tar))?);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(ShardWriter {
            shard,
            tar,
            index: create(&partial(&files.index))?,
            errors: create(&partial(&files.errors))?,
            planner: if export_planner {
                Some(create(&partial(&files.planner))?)
            } else {
                None
            },
            files,
            stats: Stats::default(),
            expected,
        })
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DatasetError> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, name, data)
            .map_err(|e| DatasetError::io(&self.files.tar, e))
    }

    fn line(w: &mut BufWriter<File>, path: &Path, value: &Value) -> Result<(), DatasetError> {
        serde_json::to_writer(&mut *w, value)
            .map_err(|e| DatasetError::io(path, std::io::Error::other(e)))?;
        w.write_all(b"\n").map_err(|e| DatasetError::io(path, e))
    }

    pub fn write(&mut self, key: &str, source: &str, outcome: Outcome) -> Result<(), DatasetError> {
        self.stats.seen += 1;
        let index = match outcome {
            Outcome::Kept(s) => {
                self.stats.kept += 1;
                self.append(&format!("{key}.{}", s.image_ext), &s.image_bytes)?;
                let json = serde_json::to_vec(&s.json)
                    .map_err(|e| DatasetError::io(&self.files.tar, std::io::Error::other(e)))?;
                self.append(&format!("{key}.json"), &json)?;
                self.append(&format!("{key}.mask.png"), &s.mask_png)?;
                if let Some(caption) = s.json["caption"].as_str() {
                    // img2dataset's caption member, for loaders that read `txt`.
                    self.append(&format!("{key}.txt"), caption.as_bytes())?;
                }
                if let (Some(w), Some(p)) = (&mut self.planner, &s.planner) {
                    Self::line(w, &self.files.planner, p)?;
                }
                json!({
                    "key": key, "source": source, "status": "kept",
                    "caption": s.json["caption"], "width": s.json["width"], "height": s.json["height"],
                    "words": s.json["words"].as_array().map_or(0, Vec::len),
                    "layout_td2": s.json["layout_td2"],
                })
            }
            Outcome::Rejected { filter, detail } => {
                *self.stats.rejected.entry(filter.to_string()).or_default() += 1;
                json!({"key": key, "source": source, "status": "rejected", "filter": filter, "detail": detail})
            }
            Outcome::Error { kind, reason } => {
                self.stats.errors += 1;
                *self.stats.error_kinds.entry(kind.to_string()).or_default() += 1;
                let line = json!({"key": key, "source": source, "kind": kind, "reason": reason});
                Self::line(&mut self.errors, &self.files.errors, &line)?;
                json!({"key": key, "source": source, "status": "error", "kind": kind, "reason": reason})
            }
        };
        Self::line(&mut self.index, &self.files.index, &index)
    }

    pub fn is_full(&self) -> bool {
        self.stats.seen >= self.expected
    }

    /// Renames the shard's files into place, stats last, and returns its stats.
    pub fn finish(self) -> Result<Stats, DatasetError> {
        let tar = self
            .tar
            .into_inner()
            .map_err(|e| DatasetError::io(&self.files.tar, e))?;
        commit(tar, &self.files.tar)?;
        commit(self.index, &self.files.index)?;
        commit(self.errors, &self.files.errors)?;
        if let Some(p) = self.planner {
            commit(p, &self.files.planner)?;
        }
        let mut stats = serde_json::to_value(&self.stats).expect("stats serialise");
        stats["shard"] = json!(self.shard);
        let bytes = serde_json::to_vec_pretty(&stats).expect("stats serialise");
        write_atomic(&self.files.stats, &bytes)?;
        Ok(self.stats)
    }
}

/// Reads a complete shard's stats.
pub(crate) fn read_stats(files: &ShardFiles) -> Result<Stats, DatasetError> {
    let text =
        std::fs::read_to_string(&files.stats).map_err(|e| DatasetError::io(&files.stats, e))?;
    serde_json::from_str(&text).map_err(|e| DatasetError::BadOutput {
        path: files.stats.clone(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_writer_whose_partial_files_were_replaced_does_not_rename_them() {
        let dir = std::env::temp_dir().join(format!("letterpress-shard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A second process starts the same shard while the first still writes it.
        let first = ShardWriter::create(&dir, 3, 1, false).unwrap();
        let second = ShardWriter::create(&dir, 3, 1, false).unwrap();
        let err = first.finish().unwrap_err().to_string();
        assert!(err.contains("replaced by another process"), "{err}");
        assert!(!ShardFiles::new(&dir, 3).is_complete());
        second.finish().unwrap();
        assert!(ShardFiles::new(&dir, 3).is_complete());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
