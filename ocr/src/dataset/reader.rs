//! Reading shards back: the samples (`key.{png,jpg,…}`, `key.json`, `key.mask.png`) of the
//! complete shards of an output folder, or of given `.tar` files, for training.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::DatasetError;

/// One sample of a shard.
#[derive(Debug, Clone)]
pub struct ShardSample {
    pub key: String,
    /// The encoded image and its extension (`png`, `jpg`, …).
    pub image: Vec<u8>,
    pub image_ext: String,
    /// The sample's `key.json` (`caption`, `lines`, `layout_td2`, …).
    pub json: Value,
    /// The glyph mask, PNG.
    pub mask_png: Vec<u8>,
}

impl ShardSample {
    /// The caption, or the empty string.
    pub fn caption(&self) -> &str {
        self.json["caption"].as_str().unwrap_or("")
    }
}

/// The shard files a path names: a `.tar`, or every `NNNNN.tar` of a folder whose
/// `NNNNN_stats.json` exists (complete shards), in name order.
pub fn shard_paths(path: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut tars: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| DatasetError::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "tar") && {
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                stem.is_some_and(|s| path.join(format!("{s}_stats.json")).is_file())
            }
        })
        .collect();
    tars.sort();
    if tars.is_empty() {
        return Err(DatasetError::Config(format!(
            "{} has no complete shards (NNNNN.tar with NNNNN_stats.json); write some with \
             `letterpress dataset build` or `letterpress dataset synth`",
            path.display()
        )));
    }
    Ok(tars)
}

/// Every complete sample (image, JSON and mask present) of the shards `path` names.
pub fn read_samples(path: &Path) -> Result<Vec<ShardSample>, DatasetError> {
    let mut samples = Vec::new();
    for tar_path in shard_paths(path)? {
        let bad = |message: String| DatasetError::BadShard {
            path: tar_path.clone(),
            message,
        };
        let file = File::open(&tar_path).map_err(|e| DatasetError::io(&tar_path, e))?;
        let mut archive = tar::Archive::new(file);
        let mut members: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let name = entry
                .path()
                .map_err(|e| bad(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            // WebDataset: the key is everything before the first dot of the base name.
            let Some((key, ext)) = name.split_once('.') else {
                continue;
            };
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(e.to_string()))?;
            members
                .entry(key.to_string())
                .or_default()
                .insert(ext.to_string(), data);
        }
        for (key, mut m) in members {
            let (Some(json), Some(mask_png)) = (m.remove("json"), m.remove("mask.png")) else {
                continue;
            };
            let Some((image_ext, image)) = m
                .into_iter()
                .find(|(e, _)| ["png", "jpg", "jpeg", "webp"].contains(&e.as_str()))
            else {
                continue;
            };
            let json: Value =
                serde_json::from_slice(&json).map_err(|e| bad(format!("{key}.json: {e}")))?;
            samples.push(ShardSample {
                key,
                image,
                image_ext,
                json,
                mask_png,
            });
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_complete_shards_is_an_error_that_says_so() {
        let dir = std::env::temp_dir().join(format!("letterpress-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A shard without its stats file is incomplete and not read.
        std::fs::write(dir.join("00000.tar"), b"partial").unwrap();
        let err = read_samples(&dir).expect_err("no complete shards");
        assert!(err.to_string().contains("no complete shards"), "{err}");
        assert!(read_samples(&dir.join("missing")).is_err());
    }
}
