//! Safetensors files read by mapping them into memory instead of copying them: the header is
//! parsed here, the data is mapped once, copy-on-write, by torch's own `from_file` (so the
//! mapping lives exactly as long as some tensor made from it), and every tensor is a view of
//! its bytes. Nothing is copied on the way; a page is read, from the page cache or the disk,
//! when it is first touched. Writing to a variable made from a view copies that page only and
//! never reaches the file.
//!
//! Like every memory-mapped load (safetensors' own in Python included), the tensors see the
//! file: rewriting it in place while they live changes them. The writers here write a new file
//! and rename it over the old one, which leaves the old inode, and so the mapping, untouched.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result, TorchContext};

/// The safetensors format's own limit on the JSON header.
const MAX_HEADER: u64 = 100 << 20;

#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: [u64; 2],
}

fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Every tensor of the safetensors file `path`, by key, as views of one mapping of the file.
pub(crate) fn read(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let Some(name) = path.to_str() else {
        // torch's `from_file` takes a UTF-8 file name: other paths are read into memory.
        return Tensor::read_safetensors(path).ctx(format!("reading {}", path.display()));
    };
    let (data_start, file_len, entries) = read_header(path)?;
    let bytes = Tensor::f_from_file(name, false, file_len as i64, (Kind::Uint8, Device::Cpu))
        .ctx(format!("mapping {}", path.display()))?;
    entries
        .into_iter()
        .map(|(key, entry)| {
            let tensor = view(&bytes, data_start, &entry, path, &key)?;
            Ok((key, tensor))
        })
        .collect()
}

/// Parses and checks the header: where the data starts, the file's length, and the entries,
/// each checked to lie inside the file, to hold exactly its shape's bytes and not to overlap
/// another.
fn read_header(path: &Path) -> Result<(u64, u64, BTreeMap<String, Entry>)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| invalid(path, format!("{file_len} bytes: too short for a header")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len > file_len - 8 {
        return Err(invalid(
            path,
            format!("header length {header_len} does not fit the file's {file_len} bytes"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| invalid(path, format!("header is not a JSON object: {e}")))?;
    let data_start = 8 + header_len;
    let mut entries = BTreeMap::new();
    for (key, value) in raw {
        if key == "__metadata__" {
            continue;
        }
        let entry: Entry = serde_json::from_value(value)
            .map_err(|e| invalid(path, format!("tensor {key}: {e}")))?;
        check_entry(&entry, file_len - data_start)
            .map_err(|m| invalid(path, format!("tensor {key}: {m}")))?;
        entries.insert(key, entry);
    }
    let mut spans: Vec<(&String, [u64; 2])> =
        entries.iter().map(|(k, e)| (k, e.data_offsets)).collect();
    spans.sort_by_key(|(_, [begin, end])| (*begin, *end));
    for pair in spans.windows(2) {
        let ((a, [_, a_end]), (b, [b_begin, _])) = (&pair[0], &pair[1]);
        if b_begin < a_end {
            return Err(invalid(path, format!("tensors {a} and {b} overlap")));
        }
    }
    Ok((data_start, file_len, entries))
}

/// The torch dtype of a safetensors dtype name, with its size in bytes.
fn kind_of(dtype: &str) -> Option<(Kind, u64)> {
    Some(match dtype {
        "F64" => (Kind::Double, 8),
        "F32" => (Kind::Float, 4),
        "F16" => (Kind::Half, 2),
        "BF16" => (Kind::BFloat16, 2),
        "I64" => (Kind::Int64, 8),
        "I32" => (Kind::Int, 4),
        "I16" => (Kind::Int16, 2),
        "I8" => (Kind::Int8, 1),
        "U8" => (Kind::Uint8, 1),
        "BOOL" => (Kind::Bool, 1),
        _ => return None,
    })
}

fn check_entry(entry: &Entry, data_len: u64) -> std::result::Result<(), String> {
    let (_, size) =
        kind_of(&entry.dtype).ok_or_else(|| format!("unsupported dtype {}", entry.dtype))?;
    let [begin, end] = entry.data_offsets;
    if begin > end || end > data_len {
        return Err(format!(
            "data offsets [{begin}, {end}] outside the {data_len} data bytes"
        ));
    }
    let bytes = entry.shape.iter().try_fold(size, |acc, &d| {
        u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    });
    if bytes != Some(end - begin) {
        return Err(format!(
            "shape {:?} of {} does not take the {} bytes of its offsets",
            entry.shape,
            entry.dtype,
            end - begin
        ));
    }
    Ok(())
}

/// The tensor an entry describes, a view of the mapped `bytes`. A tensor whose bytes do not
/// start at a multiple of its element size (a writer that did not align its header) cannot be
/// viewed in place and is copied out.
fn view(bytes: &Tensor, data_start: u64, entry: &Entry, path: &Path, key: &str) -> Result<Tensor> {
    let context = || format!("tensor {key} of {}", path.display());
    let (kind, size) = kind_of(&entry.dtype)
        .ok_or_else(|| invalid(path, format!("tensor {key}: unsupported dtype")))?;
    let [begin, end] = entry.data_offsets;
    let start = data_start + begin;
    let raw = bytes
        .f_narrow(0, start as i64, (end - begin) as i64)
        .ctx(context())?;
    let raw = if start % size == 0 {
        raw
    } else {
        raw.f_detach_copy().ctx(context())?
    };
    raw.f_view_dtype(kind)
        .and_then(|t| t.f_view(entry.shape.as_slice()))
        .ctx(context())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("letterpress-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    /// A safetensors file written byte by byte: `header` as given (no alignment padding), then
    /// `data`.
    fn write_raw(path: &Path, header: &str, data: &[u8]) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn tensors_of_every_dtype_and_shape_read_back_equal() {
        let path = tmp("kinds.safetensors");
        let f32s = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([2, 3, 4]) * 0.37 - 3.0;
        let tensors = [
            ("f32", f32s.shallow_clone()),
            ("f16", f32s.to_kind(Kind::Half)),
            ("bf16", f32s.to_kind(Kind::BFloat16)),
            ("f64", f32s.to_kind(Kind::Double)),
            ("i64", Tensor::arange(5, (Kind::Int64, Device::Cpu)) - 2),
            ("u8", Tensor::arange(7, (Kind::Uint8, Device::Cpu))),
            ("bool", Tensor::from_slice(&[true, false, true])),
            ("scalar", Tensor::from(2.5f32)),
            ("empty", Tensor::zeros([0, 3], (Kind::Float, Device::Cpu))),
        ];
        Tensor::write_safetensors(&tensors, &path).expect("write");
        let read: BTreeMap<String, Tensor> = read(&path).expect("read").into_iter().collect();
        assert_eq!(read.len(), tensors.len());
        for (key, want) in &tensors {
            let got = &read[*key];
            assert_eq!(got.kind(), want.kind(), "{key}");
            assert_eq!(got.size(), want.size(), "{key}");
            assert!(got.equal(want), "{key}: {got} vs {want}");
        }
    }

    #[test]
    fn unaligned_data_is_copied_out_and_metadata_skipped() {
        let path = tmp("unaligned.safetensors");
        // A 3-byte u8 tensor first puts the f32 tensor at an odd offset.
        let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}}"#;
        let mut data = vec![7u8, 8, 9];
        for v in [1.5f32, -2.25] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        write_raw(&path, header, &data);
        let read: BTreeMap<String, Tensor> = read(&path).expect("read").into_iter().collect();
        assert_eq!(Vec::<u8>::try_from(&read["a"]).expect("u8"), [7, 8, 9]);
        assert_eq!(Vec::<f32>::try_from(&read["b"]).expect("f32"), [1.5, -2.25]);
    }

    #[test]
    fn malformed_headers_name_the_file_and_the_tensor() {
        let cases = [
            (
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                "tensor w: data offsets [0, 16] outside the 8 data bytes",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                "tensor w: shape [3] of F32 does not take the 8 bytes",
            ),
            (
                r#"{"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#,
                "tensor w: unsupported dtype F8_E4M3",
            ),
            (
                r#"{"v":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                "tensors v and w overlap",
            ),
            ("[1, 2]", "header is not a JSON object"),
        ];
        for (i, (header, expected)) in cases.into_iter().enumerate() {
            let path = tmp(&format!("bad-{i}.safetensors"));
            write_raw(&path, header, &[0u8; 8]);
            let err = read(&path).expect_err(expected);
            let msg = err.to_string();
            assert!(matches!(err, Error::Safetensors { .. }), "{msg}");
            assert!(
                msg.contains(expected) && msg.contains(&path.display().to_string()),
                "{msg}"
            );
        }
        let path = tmp("short.safetensors");
        std::fs::write(&path, [1u8, 2, 3]).expect("write");
        assert!(matches!(read(&path), Err(Error::Safetensors { .. })));
    }

    #[test]
    fn writing_to_a_view_leaves_the_file_alone() {
        let path = tmp("cow.safetensors");
        let ones = Tensor::ones([1024], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[("w", &ones)], &path).expect("write");
        let before = std::fs::read(&path).expect("read file");
        let (_, mut w) = read(&path).expect("read").remove(0);
        let _ = w.f_add_(&Tensor::from(1f32)).expect("add");
        assert_eq!(w.sum(Kind::Double).double_value(&[]), 2048.0);
        assert_eq!(std::fs::read(&path).expect("read file"), before);
        let (_, again) = read(&path).expect("read").remove(0);
        assert!(again.equal(&ones));
    }
}
