//! Font discovery (fontdb over the system's fonts), loading (ab_glyph) and per-glyph fallback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ab_glyph::{Font, FontArc, FontRef, FontVec};
use fontdb::{Database, Family, Query, Style, Weight};

use crate::RenderError;

/// The default font: DejaVu Sans Bold (Debian's `fonts-dejavu-core`), heavy strokes that
/// diffusion models and OCR read well.
pub const DEFAULT_FONT: &str = "DejaVu Sans Bold";

/// Families tried, in order, for a character the line's font lacks, before every other
/// installed face is searched: Latin/Greek/Cyrillic, then Noto's wider coverage, then CJK.
const PREFERRED_FALLBACKS: &[&str] = &[
    "DejaVu Sans",
    "Noto Sans",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK KR",
    "Noto Sans Symbols",
    "Noto Sans Symbols 2",
    "Noto Sans Math",
];

/// Index of a loaded face in a [`FontBook`].
pub(crate) type FaceId = usize;

/// A loaded face.
pub(crate) struct Face {
    pub font: FontArc,
    /// `path#index` or the PostScript name, for messages and metadata.
    pub name: String,
    /// The file and face index it was read from (`None` for in-memory fonts).
    pub source: Option<(PathBuf, u32)>,
    pub bold: bool,
}

/// The system's font database, scanned once per process (it takes a moment on machines with
/// thousands of Noto files).
fn system_fonts() -> &'static Database {
    static DB: OnceLock<Database> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = Database::new();
        db.load_system_fonts();
        tracing::debug!(faces = db.len(), "system fonts scanned");
        db
    })
}

/// Faces loaded so far, the font specs resolved to them, and the fallback face per character.
#[derive(Default)]
pub(crate) struct FontBook {
    faces: RwLock<Vec<Arc<Face>>>,
    by_source: Mutex<HashMap<(PathBuf, u32), FaceId>>,
    by_spec: Mutex<HashMap<String, FaceId>>,
    fallback: Mutex<HashMap<(char, bool), Option<FaceId>>>,
}

impl FontBook {
    pub fn face(&self, id: FaceId) -> Arc<Face> {
        // Ids are only handed out after the face was pushed, so the index is always valid.
        self.faces.read().unwrap_or_else(|e| e.into_inner())[id].clone()
    }

    /// Resolves a font spec: a file path (`PATH` or `PATH#INDEX` for a face of a `.ttc`
    /// collection) or a family name with optional style words (`"Noto Sans CJK SC"`,
    /// `"DejaVu Sans Bold"`, `"DejaVuSans-Bold"` as a PostScript name).
    pub fn resolve(&self, spec: &str) -> Result<FaceId, RenderError> {
        if let Some(&id) = lock(&self.by_spec).get(spec) {
            return Ok(id);
        }
        let id = if looks_like_path(spec) {
            let (path, index) = split_face_index(spec);
            self.load_file(Path::new(path), index, false)?
        } else {
            let db = system_fonts();
            let fid = find_family(db, spec).ok_or_else(|| RenderError::FontNotFound {
                spec: spec.to_string(),
                hint: family_hint(db, spec),
            })?;
            self.load_db_face(db, fid)?
        };
        lock(&self.by_spec).insert(spec.to_string(), id);
        Ok(id)
    }

    /// The face that draws `ch` for a line set in `primary`: the primary face when it has the
    /// glyph, else the first fallback that does, or `None` when no installed font has it.
    pub fn face_for(&self, primary: FaceId, ch: char) -> Option<FaceId> {
        let face = self.face(primary);
        if draws(&face.font, ch) {
            return Some(primary);
        }
        let key = (ch, face.bold);
        if let Some(found) = lock(&self.fallback).get(&key) {
            return *found;
        }
        let found = self.find_fallback(ch, face.bold);
        lock(&self.fallback).insert(key, found);
        found
    }

    fn find_fallback(&self, ch: char, bold: bool) -> Option<FaceId> {
        let db = system_fonts();
        let weight = if bold { Weight::BOLD } else { Weight::NORMAL };
        let preferred = PREFERRED_FALLBACKS.iter().filter_map(|family| {
            db.query(&Query {
                families: &[Family::Name(family)],
                weight,
                ..Query::default()
            })
        });
        // Then every installed face, in a fixed order so the choice does not depend on how
        // the font directories happened to be listed.
        let mut rest: Vec<&fontdb::FaceInfo> = db.faces().collect();
        rest.sort_by(|a, b| {
            (source_path(&a.source), a.index, a.weight.0).cmp(&(
                source_path(&b.source),
                b.index,
                b.weight.0,
            ))
        });
        let candidates = preferred.chain(rest.into_iter().map(|f| f.id));
        for fid in candidates {
            let has = db.with_face_data(fid, |data, index| {
                FontRef::try_from_slice_and_index(data, index).is_ok_and(|f| draws(&f, ch))
            });
            if has == Some(true) {
                match self.load_db_face(db, fid) {
                    Ok(id) => return Some(id),
                    Err(e) => tracing::warn!("skipping fallback font: {e}"),
                }
            }
        }
        None
    }

    fn load_db_face(&self, db: &Database, fid: fontdb::ID) -> Result<FaceId, RenderError> {
        let info = db.face(fid).ok_or_else(|| RenderError::FontNotFound {
            spec: format!("{fid:?}"),
            hint: String::new(),
        })?;
        let bold = info.weight.0 >= 600;
        match &info.source {
            fontdb::Source::File(path) | fontdb::Source::SharedFile(path, _) => {
                self.load_file(path, info.index, bold)
            }
            fontdb::Source::Binary(data) => {
                let font =
                    FontVec::try_from_vec_and_index(data.as_ref().as_ref().to_vec(), info.index)
                        .map_err(|e| RenderError::InvalidFont {
                            path: PathBuf::from("<memory>"),
                            index: info.index,
                            reason: e.to_string(),
                        })?;
                Ok(self.push(Face {
                    font: FontArc::new(font),
                    name: info.post_script_name.clone(),
                    source: None,
                    bold,
                }))
            }
        }
    }

    fn load_file(&self, path: &Path, index: u32, bold_hint: bool) -> Result<FaceId, RenderError> {
        let key = (path.to_path_buf(), index);
        if let Some(&id) = lock(&self.by_source).get(&key) {
            return Ok(id);
        }
        let data = std::fs::read(path).map_err(|source| RenderError::FontIo {
            path: path.to_path_buf(),
            source,
        })?;
        let font =
            FontVec::try_from_vec_and_index(data, index).map_err(|e| RenderError::InvalidFont {
                path: path.to_path_buf(),
                index,
                reason: e.to_string(),
            })?;
        let bold = bold_hint || name_says_bold(path);
        let name = format!("{}#{index}", path.display());
        let source = Some(key.clone());
        let id = self.push(Face {
            font: FontArc::new(font),
            name,
            source,
            bold,
        });
        lock(&self.by_source).insert(key, id);
        Ok(id)
    }

    fn push(&self, face: Face) -> FaceId {
        let mut faces = self.faces.write().unwrap_or_else(|e| e.into_inner());
        faces.push(Arc::new(face));
        faces.len() - 1
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these caches inconsistent: every insert is a single call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn source_path(source: &fontdb::Source) -> Option<&Path> {
    match source {
        fontdb::Source::File(p) | fontdb::Source::SharedFile(p, _) => Some(p),
        fontdb::Source::Binary(_) => None,
    }
}

/// True when `font` has a glyph for `ch` that draws something (whitespace needs no outline).
/// Some fonts map characters to empty placeholder glyphs; those do not count.
fn draws(font: &impl Font, ch: char) -> bool {
    let id = font.glyph_id(ch);
    id.0 != 0 && (ch.is_whitespace() || font.outline(id).is_some())
}

/// Weight of a font given by path, for choosing bold or regular fallbacks: ab_glyph does not
/// expose OS/2 `usWeightClass`, so the file name decides (`DejaVuSans-Bold.ttf`).
fn name_says_bold(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    ["bold", "black", "heavy"].iter().any(|w| name.contains(w))
}

fn looks_like_path(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    let (file, _) = split_face_index(&lower);
    spec.contains('/')
        || [".ttf", ".otf", ".ttc", ".otc"]
            .iter()
            .any(|ext| file.ends_with(ext))
}

/// `"fonts.ttc#2"` → (`"fonts.ttc"`, 2); no `#N` suffix → index 0.
fn split_face_index(spec: &str) -> (&str, u32) {
    if let Some((path, idx)) = spec.rsplit_once('#') {
        if let Ok(i) = idx.parse() {
            return (path, i);
        }
    }
    (spec, 0)
}

/// Style words that may follow a family name, and the weight or style they ask for.
fn style_word(word: &str) -> Option<(Option<Weight>, Option<Style>)> {
    let w = |n| Some((Some(Weight(n)), None));
    match word.to_ascii_lowercase().as_str() {
        "thin" | "hairline" => w(100),
        "extralight" | "ultralight" => w(200),
        "light" => w(300),
        "regular" | "normal" | "book" | "roman" => w(400),
        "medium" => w(500),
        "semibold" | "demibold" => w(600),
        "bold" => w(700),
        "extrabold" | "ultrabold" => w(800),
        "black" | "heavy" => w(900),
        "italic" => Some((None, Some(Style::Italic))),
        "oblique" => Some((None, Some(Style::Oblique))),
        _ => None,
    }
}

fn find_family(db: &Database, spec: &str) -> Option<fontdb::ID> {
    let spec = spec.trim();
    // A PostScript name ("DejaVuSans-Bold") names one face exactly.
    if let Some(f) = db
        .faces()
        .find(|f| f.post_script_name.eq_ignore_ascii_case(spec))
    {
        return Some(f.id);
    }
    // Otherwise peel style words off the end: "Noto Sans CJK SC Bold" → family + weight 700.
    let words: Vec<&str> = spec.split_whitespace().collect();
    let mut weight = None;
    let mut style = None;
    for split in (1..=words.len()).rev() {
        let family = words[..split].join(" ");
        let has_family = db.faces().any(|f| {
            f.families
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&family))
        });
        if has_family {
            let name = db
                .faces()
                .flat_map(|f| f.families.iter())
                .find(|(n, _)| n.eq_ignore_ascii_case(&family))
                .map(|(n, _)| n.clone())?;
            return db.query(&Query {
                families: &[Family::Name(&name)],
                weight: weight.unwrap_or(Weight::NORMAL),
                style: style.unwrap_or(Style::Normal),
                ..Query::default()
            });
        }
        // words[split-1] must be a style word for the search to go on.
        let (w, s) = style_word(words[split - 1])?;
        weight = weight.or(w);
        style = style.or(s);
    }
    None
}

/// " (did you mean …?)" with installed families that share the spec's first word, or a hint
/// to install fonts when there are none at all.
fn family_hint(db: &Database, spec: &str) -> String {
    if db.is_empty() {
        return "; no fonts are installed (run scripts/setup, or pass a font file)".to_string();
    }
    let first = spec
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut similar: Vec<&str> = db
        .faces()
        .flat_map(|f| f.families.iter().map(|(n, _)| n.as_str()))
        .filter(|n| !first.is_empty() && n.to_ascii_lowercase().starts_with(&first))
        .collect();
    similar.sort_unstable();
    similar.dedup();
    similar.truncate(8);
    if similar.is_empty() {
        "; give an installed family name (`fc-list : family` lists them) or a font file path"
            .to_string()
    } else {
        format!("; installed families like it: {}", similar.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_that_are_paths() {
        assert!(looks_like_path("/usr/share/fonts/x.ttf"));
        assert!(looks_like_path("NotoSansCJK-Bold.ttc#2"));
        assert!(!looks_like_path("DejaVu Sans Bold"));
        assert_eq!(split_face_index("a.ttc#3"), ("a.ttc", 3));
        assert_eq!(split_face_index("dir#x/a.ttf"), ("dir#x/a.ttf", 0));
    }
}
