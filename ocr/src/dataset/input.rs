//! Dataset inputs: a folder of images with optional sidecar captions, a file list, or
//! img2dataset-style WebDataset `.tar` shards. Inputs are enumerated in a deterministic order,
//! which is what makes the shard assignment, and so resuming, deterministic.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::DatasetError;

/// File extensions taken as images when walking a folder (the decoder still checks the
/// content; a `.png` holding text is reported as not an image).
const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "jxl",
];

/// Longest caption read from a sidecar, in bytes; longer ones are cut.
const MAX_CAPTION_BYTES: u64 = 64 * 1024;

/// What kind of INPUT was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// A folder of images, walked recursively in path order.
    Folder,
    /// A text file with one image path per line (`path` or `path<TAB>caption`).
    List,
    /// WebDataset `.tar` shards: one `.tar` file or a folder of them.
    WebDataset,
}

/// Where an input's image bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A file; sidecar captions (`name.txt`, `name.json`) are looked up next to it.
    File(PathBuf),
    /// A member of a tar shard.
    TarMember {
        tar: PathBuf,
        offset: u64,
        size: u64,
    },
    /// A WebDataset sample without an image member; reported as an error.
    NoImage { members: Vec<String> },
}

/// One input image.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// How the input is named in the output: relative path, list entry, or `shard.tar/key`.
    pub source: String,
    pub location: Location,
    /// Caption known at enumeration (file list column, WebDataset `.txt`/`.json`).
    pub caption: Option<String>,
    /// The sample's own JSON (WebDataset `.json` or sidecar), kept for provenance (`url`…).
    pub source_json: Option<Value>,
}

/// Decides the input kind: a `.tar` file or a folder holding `.tar` files is WebDataset, any
/// other file is a list, any other folder is a folder of images.
pub fn detect_kind(input: &Path) -> Result<InputKind, DatasetError> {
    let meta = std::fs::metadata(input).map_err(|e| DatasetError::io(input, e))?;
    if meta.is_file() {
        return Ok(if has_extension(input, &["tar"]) {
            InputKind::WebDataset
        } else {
            InputKind::List
        });
    }
    let has_tar = std::fs::read_dir(input)
        .map_err(|e| DatasetError::io(input, e))?
        .filter_map(Result::ok)
        .any(|e| has_extension(&e.path(), &["tar"]) && e.path().is_file());
    Ok(if has_tar {
        InputKind::WebDataset
    } else {
        InputKind::Folder
    })
}

/// All inputs in their deterministic order.
pub(crate) fn enumerate(input: &Path, kind: InputKind) -> Result<Vec<Input>, DatasetError> {
    match kind {
        InputKind::Folder => folder(input),
        InputKind::List => list(input),
        InputKind::WebDataset => webdataset(input),
    }
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn folder(root: &Path) -> Result<Vec<Input>, DatasetError> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| DatasetError::io(&dir, e))? {
            let entry = entry.map_err(|e| DatasetError::io(&dir, e))?;
            let path = entry.path();
            if is_hidden(&path) {
                continue;
            }
            // file_type() does not follow symlinks: linked folders are not walked (no loops),
            // linked files are read.
            let file_type = entry.file_type().map_err(|e| DatasetError::io(&path, e))?;
            if file_type.is_dir() {
                stack.push(path);
            } else if has_extension(&path, &IMAGE_EXTENSIONS) {
                files.push(path);
            }
        }
    }
    let mut inputs: Vec<Input> = files
        .into_iter()
        .map(|path| Input {
            source: path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
            location: Location::File(path),
            caption: None,
            source_json: None,
        })
        .collect();
    inputs.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(inputs)
}

fn list(path: &Path) -> Result<Vec<Input>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|e| DatasetError::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (file, caption) = match line.split_once('\t') {
                Some((f, c)) => (f, Some(c.trim().to_string()).filter(|c| !c.is_empty())),
                None => (line, None),
            };
            let file = file.trim();
            Input {
                source: file.to_string(),
                location: Location::File(base.join(file)),
                caption,
                source_json: None,
            }
        })
        .collect())
}

/// The sample key of a WebDataset member: the path up to the first `.` of the file name
/// (WebDataset's rule), and the rest as the member's extension.
fn split_member(path: &str) -> (&str, &str) {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    match path[name_start..].find('.') {
        Some(dot) => (&path[..name_start + dot], &path[name_start + dot + 1..]),
        None => (path, ""),
    }
}

fn webdataset(input: &Path) -> Result<Vec<Input>, DatasetError> {
    let mut shards = if input.is_dir() {
        std::fs::read_dir(input)
            .map_err(|e| DatasetError::io(input, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && has_extension(p, &["tar"]) && !is_hidden(p))
            .collect()
    } else {
        vec![input.to_path_buf()]
    };
    shards.sort();
    let mut inputs = Vec::new();
    for shard in shards {
        inputs.extend(tar_samples(&shard)?);
    }
    Ok(inputs)
}

/// The samples of one shard in the shard's order; members of a sample are adjacent in a
/// WebDataset tar.
fn tar_samples(shard: &Path) -> Result<Vec<Input>, DatasetError> {
    let shard_name = shard
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad = |e: std::io::Error| DatasetError::BadShard {
        path: shard.to_path_buf(),
        message: e.to_string(),
    };
    let file = File::open(shard).map_err(|e| DatasetError::io(shard, e))?;
    let mut archive = tar::Archive::new(file);
    let mut samples: Vec<(String, Input, Vec<String>)> = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let (key, ext) = split_member(&path);
        let (key, ext) = (key.to_string(), ext.to_ascii_lowercase());
        if samples.last().is_none_or(|(k, _, _)| *k != key) {
            samples.push((
                key.clone(),
                Input {
                    source: format!("{shard_name}/{key}"),
                    location: Location::NoImage {
                        members: Vec::new(),
                    },
                    caption: None,
                    source_json: None,
                },
                Vec::new(),
            ));
        }
        let (_, sample, members) = samples.last_mut().expect("pushed above");
        members.push(ext.clone());
        match ext.as_str() {
            e if IMAGE_EXTENSIONS.contains(&e) => {
                if matches!(sample.location, Location::NoImage { .. }) {
                    sample.location = Location::TarMember {
                        tar: shard.to_path_buf(),
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    };
                }
            }
            "txt" | "caption" => {
                let text = read_small(&mut entry).map_err(bad)?;
                sample.caption = Some(text.trim().to_string()).filter(|c| !c.is_empty());
            }
            "json" => {
                let text = read_small(&mut entry).map_err(bad)?;
                if let Ok(json) = serde_json::from_str::<Value>(&text) {
                    if sample.caption.is_none() {
                        sample.caption = caption_from_json(&json);
                    }
                    sample.source_json = Some(json);
                }
            }
            _ => {}
        }
    }
    Ok(samples
        .into_iter()
        .map(|(_, mut sample, members)| {
            if let Location::NoImage { members: m } = &mut sample.location {
                *m = members;
            }
            sample
        })
        .collect())
}

fn read_small(reader: &mut impl Read) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    reader.take(MAX_CAPTION_BYTES).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `caption` (img2dataset), else `text`, else `prompt`.
pub(crate) fn caption_from_json(json: &Value) -> Option<String> {
    ["caption", "text", "prompt"]
        .iter()
        .find_map(|k| json.get(*k).and_then(Value::as_str))
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
}

/// An input's image bytes, at most `max_bytes` (more is an error, checked before reading).
pub(crate) fn read_bytes(location: &Location, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    match location {
        Location::File(path) => {
            let mut file = File::open(path).map_err(ReadError::Io)?;
            let size = file.metadata().map_err(ReadError::Io)?.len();
            if size > max_bytes {
                return Err(ReadError::TooLarge(size));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(ReadError::Io)?;
            Ok(bytes)
        }
        Location::TarMember { tar, offset, size } => {
            if *size > max_bytes {
                return Err(ReadError::TooLarge(*size));
            }
            let mut file = File::open(tar).map_err(ReadError::Io)?;
            file.seek(SeekFrom::Start(*offset)).map_err(ReadError::Io)?;
            let mut bytes = vec![0; *size as usize];
            file.read_exact(&mut bytes).map_err(ReadError::Io)?;
            Ok(bytes)
        }
        Location::NoImage { members } => Err(ReadError::NoImage(members.clone())),
    }
}

pub(crate) enum ReadError {
    Io(std::io::Error),
    TooLarge(u64),
    NoImage(Vec<String>),
}

/// Caption and sidecar JSON of a file input: `name.txt`, else `name.json` next to the image.
pub(crate) fn sidecar(path: &Path) -> (Option<String>, Option<Value>) {
    let txt = path.with_extension("txt");
    let json = path.with_extension("json");
    let source_json = File::open(&json)
        .ok()
        .and_then(|mut f| read_small(&mut f).ok())
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let caption = File::open(&txt)
        .ok()
        .and_then(|mut f| read_small(&mut f).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(|| source_json.as_ref().and_then(caption_from_json));
    (caption, source_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webdataset_keys_split_at_the_first_dot_of_the_name() {
        assert_eq!(split_member("000000123.jpg"), ("000000123", "jpg"));
        assert_eq!(split_member("a.b/c.mask.png"), ("a.b/c", "mask.png"));
        assert_eq!(split_member("noext"), ("noext", ""));
    }
}
