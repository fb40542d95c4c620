//! CLIP's byte-level BPE tokenizer, giving exactly the ids of transformers' `CLIPTokenizer`
//! (transformers 5, `models/clip/tokenization_clip.py`, backed by HF tokenizers):
//!
//! 1. special tokens (bos, eos, unk, pad) and added tokens are cut out of the raw text first,
//!    case-sensitively, leftmost-longest;
//! 2. every other piece is normalised: NFC, runs of whitespace to one space, lowercase;
//! 3. split with CLIP's pattern (contractions, letter runs, single digits, other symbol runs);
//! 4. each piece's UTF-8 bytes map to GPT-2's byte alphabet and are merged by BPE rank, the last
//!    symbol carrying the `</w>` end-of-word suffix;
//! 5. `bos … eos`, truncated to `model_max_length` (77), right-padded with the pad token.
//!
//! TextDiffuser-2 added 2,175 tokens (`added_tokens.json`); transformers 4's slow tokenizer, which
//! it was trained with, matched them case-sensitively on the raw text, as step 1 does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};
use crate::weights::read_json;

/// CLIP's pre-tokenisation pattern (`tokenization_clip.py`), applied to lowercased text.
const PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A CLIP tokenizer read from a `tokenizer/` folder.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    vocab: HashMap<String, i64>,
    ranks: HashMap<(String, String), usize>,
    /// Tokens cut from the raw text before normalisation: special tokens and added tokens.
    raw_tokens: HashMap<String, i64>,
    longest_raw_token: usize,
    byte_chars: Vec<char>,
    pattern: Regex,
    whitespace: Regex,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
    unk_id: i64,
    max_length: usize,
}

fn tok_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// GPT-2's reversible byte → printable-character table (OpenAI `bytes_to_unicode`).
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

/// A special-token entry of `tokenizer_config.json` / `special_tokens_map.json`: either a
/// string or an `AddedToken` object with `content`.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Vocabulary, merge lines, added tokens, and the file the merges came from (for errors).
type BpeFiles = (
    HashMap<String, i64>,
    Vec<String>,
    Vec<(String, i64)>,
    PathBuf,
);

/// The BPE vocabulary and merges from `vocab.json` + `merges.txt`, or else from a fast
/// tokenizer's `tokenizer.json` (with its added tokens).
fn read_bpe_files(dir: &Path) -> Result<BpeFiles> {
    let vocab_path = dir.join("vocab.json");
    let tokenizer_json = dir.join("tokenizer.json");
    // A fast tokenizer's tokenizer.json carries the same BPE (model.vocab, model.merges)
    // and its added tokens; vocab.json + merges.txt win when both are present.
    if vocab_path.is_file() {
        let vocab = read_json(&vocab_path)?;
        let merges_path = dir.join("merges.txt");
        let merges = std::fs::read_to_string(&merges_path).map_err(|source| Error::Io {
            path: merges_path.clone(),
            source,
        })?;
        let lines = merges
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        Ok((vocab, lines, Vec::new(), merges_path))
    } else if tokenizer_json.is_file() {
        read_tokenizer_json(&tokenizer_json)
    } else {
        Err(tok_err(
            dir,
            "neither vocab.json + merges.txt nor tokenizer.json",
        ))
    }
}

/// A fast tokenizer's `tokenizer.json`: `model.vocab`, `model.merges` and `added_tokens`.
fn read_tokenizer_json(tokenizer_json: &Path) -> Result<BpeFiles> {
    let v: Value = read_json(tokenizer_json)?;
    let model = &v["model"];
    let vocab: HashMap<String, i64> = serde_json::from_value(model["vocab"].clone())
        .map_err(|e| tok_err(tokenizer_json, format!("model.vocab: {e}")))?;
    let lines = model["merges"]
        .as_array()
        .ok_or_else(|| tok_err(tokenizer_json, "no model.merges"))?
        .iter()
        .map(|m| match m {
            // Older files write "a b", newer ones ["a", "b"].
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => Some(
                pair.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| {
            tok_err(
                tokenizer_json,
                "model.merges holds something other than pairs",
            )
        })?;
    let added = v["added_tokens"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|t| Some((t["content"].as_str()?.to_string(), t["id"].as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok((vocab, lines, added, tokenizer_json.to_path_buf()))
}

/// The rank of each merge pair: its line number (from 0) in `merges_path`.
fn merge_ranks(lines: &[String], merges_path: &Path) -> Result<HashMap<(String, String), usize>> {
    let mut ranks = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => {
                ranks.insert((a.to_string(), b.to_string()), i);
            }
            _ => {
                return Err(tok_err(
                    merges_path,
                    format!("merge {} is not two symbols: {line:?}", i + 1),
                ));
            }
        }
    }
    Ok(ranks)
}

impl ClipTokenizer {
    /// Reads `vocab.json` + `merges.txt` (or, without them, a fast tokenizer's
    /// `tokenizer.json`), `tokenizer_config.json` (or `special_tokens_map.json`) and, when
    /// present, `added_tokens.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let (mut vocab, merge_lines, file_added, merges_path) = read_bpe_files(dir)?;
        let ranks = merge_ranks(&merge_lines, &merges_path)?;

        let mut special: HashMap<String, Value> = HashMap::new();
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = dir.join(name);
            if path.is_file() {
                let map: HashMap<String, Value> = read_json(&path)?;
                special.extend(map); // tokenizer_config.json wins
            }
        }
        let special_token = |key: &str, default: &str| -> String {
            special
                .get(key)
                .and_then(token_content)
                .unwrap_or_else(|| default.to_string())
        };
        let max_length = special
            .get("model_max_length")
            .and_then(Value::as_u64)
            .unwrap_or(77);
        let max_length = usize::try_from(max_length)
            .ok()
            .filter(|&m| (2..=4096).contains(&m))
            .unwrap_or(77);

        let mut raw_tokens = HashMap::new();
        for (token, id) in file_added {
            vocab.insert(token.clone(), id);
            raw_tokens.insert(token, id);
        }
        let added_path = dir.join("added_tokens.json");
        if added_path.is_file() {
            let added: HashMap<String, i64> = read_json(&added_path)?;
            for (token, id) in added {
                vocab.insert(token.clone(), id);
                raw_tokens.insert(token, id);
            }
        }
        let mut ids = HashMap::new();
        for (key, default) in [
            ("bos_token", "<|startoftext|>"),
            ("eos_token", "<|endoftext|>"),
            ("unk_token", "<|endoftext|>"),
            ("pad_token", "<|endoftext|>"),
        ] {
            let token = special_token(key, default);
            let id = *vocab
                .get(&token)
                .ok_or_else(|| tok_err(dir, format!("{key} {token:?} is not in the vocabulary")))?;
            raw_tokens.insert(token, id);
            ids.insert(key, id);
        }
        let longest_raw_token = raw_tokens.keys().map(String::len).max().unwrap_or(0);
        let pattern = Regex::new(PATTERN).map_err(|e| tok_err(dir, e.to_string()))?;
        let whitespace = Regex::new(r"\s+").map_err(|e| tok_err(dir, e.to_string()))?;
        Ok(Self {
            vocab,
            ranks,
            raw_tokens,
            longest_raw_token,
            byte_chars: byte_chars(),
            pattern,
            whitespace,
            bos_id: ids["bos_token"],
            eos_id: ids["eos_token"],
            pad_id: ids["pad_token"],
            unk_id: ids["unk_token"],
            max_length,
        })
    }

    pub fn bos_id(&self) -> i64 {
        self.bos_id
    }
    pub fn eos_id(&self) -> i64 {
        self.eos_id
    }
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }
    /// `model_max_length` from the tokenizer config (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
    /// Vocabulary size including added tokens.
    pub fn len(&self) -> usize {
        self.vocab.len()
    }
    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    /// The id of one token string (`"l25"`, `"[H]"`, `"cat</w>"`), as `convert_tokens_to_ids`.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.vocab.get(token).copied()
    }

    /// The ids of `text` without bos/eos, untruncated.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut ids = Vec::new();
        let mut rest_start = 0;
        let mut i = 0;
        while i < text.len() {
            if let Some((len, id)) = self.raw_token_at(&text[i..]) {
                self.encode_normalized(&text[rest_start..i], &mut ids);
                ids.push(id);
                i += len;
                rest_start = i;
            } else {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        self.encode_normalized(&text[rest_start..], &mut ids);
        ids
    }

    /// `[bos] ids [eos]` truncated to `max_length` and right-padded with the pad id, as
    /// `tokenizer(text, padding="max_length", truncation=True)` returns them.
    pub fn encode_padded(&self, text: &str) -> Vec<i64> {
        let mut ids = self.encode_unpadded(text);
        ids.resize(self.max_length, self.pad_id);
        ids
    }

    /// `[bos] ids [eos]`, truncated to `max_length`, not padded.
    pub fn encode_unpadded(&self, text: &str) -> Vec<i64> {
        let mut content = self.encode(text);
        content.truncate(self.max_length - 2);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend(content);
        ids.push(self.eos_id);
        ids
    }

    /// Whether this is a TextDiffuser-2 tokenizer: its layout tokens (`l0`…`l519`) and
    /// character tokens (`[a]`…) are in the vocabulary.
    pub fn has_layout_tokens(&self) -> bool {
        ["l519", "[a]"]
            .iter()
            .all(|t| self.token_to_id(t).is_some())
    }

    /// TextDiffuser-2's text-encoder input (docs/architecture.md; microsoft/unilm `textdiffuser-2`
    /// inference): the caption's `[bos] … [eos]`, then for each text line its tokens
    /// (`["l25", "t89", "r100", "b120", "[H]", "[i]"]`) and an eos; cut to `max_length` and
    /// right-padded with the pad id. A token outside the vocabulary becomes the unk id, as
    /// `convert_tokens_to_ids` makes it.
    pub fn textdiffuser2_input_ids<S: AsRef<str>>(
        &self,
        caption: &str,
        lines: &[Vec<S>],
    ) -> Vec<i64> {
        let mut ids = self.encode_unpadded(caption);
        for line in lines {
            ids.extend(
                line.iter()
                    .map(|t| self.token_to_id(t.as_ref()).unwrap_or(self.unk_id)),
            );
            ids.push(self.eos_id);
        }
        ids.truncate(self.max_length);
        ids.resize(self.max_length, self.pad_id);
        ids
    }

    /// The longest special or added token that starts `text`.
    fn raw_token_at(&self, text: &str) -> Option<(usize, i64)> {
        let mut end = self.longest_raw_token.min(text.len());
        while end > 0 {
            if text.is_char_boundary(end)
                && let Some(&id) = self.raw_tokens.get(&text[..end])
            {
                return Some((end, id));
            }
            end -= 1;
        }
        None
    }

    fn encode_normalized(&self, piece: &str, ids: &mut Vec<i64>) {
        if piece.is_empty() {
            return;
        }
        let nfc: String = piece.nfc().collect();
        // Char-wise lowercasing as HF tokenizers does it (no final-sigma rule of str::to_lowercase).
        let text: String = self
            .whitespace
            .replace_all(&nfc, " ")
            .chars()
            .flat_map(char::to_lowercase)
            .collect();
        for m in self.pattern.find_iter(&text) {
            let word: Vec<String> = m
                .as_str()
                .bytes()
                .map(|b| self.byte_chars[b as usize].to_string())
                .collect();
            for token in self.bpe(word) {
                ids.push(self.vocab.get(&token).copied().unwrap_or(self.unk_id));
            }
        }
    }

    /// Byte-pair merges by rank (OpenAI CLIP `simple_tokenizer.py`), `</w>` on the last symbol.
    fn bpe(&self, mut word: Vec<String>) -> Vec<String> {
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, w[0].clone(), w[1].clone()))
                })
                .min_by_key(|(r, _, _)| *r);
            let Some((_, a, b)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }
}
