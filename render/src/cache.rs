//! The glyph cache: per-character metrics, and coverage bitmaps rasterised once per glyph,
//! size and sub-pixel offset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ab_glyph::{Font, GlyphId, PxScale, point};

use crate::fonts::{FaceId, FontBook};

/// Sizes and positions are quantised to 1/4 px so that a glyph drawn again at almost the same
/// size or offset comes from the cache; the error (≤ 1/8 px) is invisible.
pub(crate) const QUANTUM: f32 = 4.0;

/// Bitmaps kept before the cache is emptied and starts again (bounds memory in long services).
const MAX_BITMAP_BYTES: usize = 64 << 20;

/// Metrics of one character as drawn for a line set in some primary face, at 1 px font size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GlyphInfo {
    /// The face that draws it (the primary face or a fallback).
    pub face: FaceId,
    pub id: GlyphId,
    /// Horizontal advance.
    pub advance: f32,
    /// Ink box relative to the pen position on the baseline, y down: `[x0, y0, x1, y1]`.
    pub ink: Option<[f32; 4]>,
}

/// A rasterised glyph: coverage in 0..=255, placed `left, top` from the integer pen position.
#[derive(Debug)]
pub(crate) struct GlyphBitmap {
    pub left: i32,
    pub top: i32,
    pub width: usize,
    pub height: usize,
    pub coverage: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BitmapKey {
    pub face: FaceId,
    pub glyph: u16,
    /// Font size in 1/QUANTUM px.
    pub size_q: u32,
    /// Sub-pixel pen offset in 1/QUANTUM px, 0..QUANTUM.
    pub fx: u8,
    pub fy: u8,
}

#[derive(Default)]
struct Bitmaps {
    map: HashMap<BitmapKey, Arc<GlyphBitmap>>,
    bytes: usize,
}

#[derive(Default)]
pub(crate) struct GlyphCache {
    /// `None` records that no installed font has the character.
    infos: Mutex<HashMap<(FaceId, char), Option<GlyphInfo>>>,
    bitmaps: Mutex<Bitmaps>,
    rasterised: AtomicUsize,
}

impl GlyphCache {
    /// Metrics of `ch` for a line whose font is `primary`, with fallback; `None` when no
    /// installed font has the character.
    pub fn info(&self, book: &FontBook, primary: FaceId, ch: char) -> Option<GlyphInfo> {
        if let Some(found) = lock(&self.infos).get(&(primary, ch)) {
            return *found;
        }
        let info = book.face_for(primary, ch).map(|face_id| {
            let face = book.face(face_id);
            let font = &face.font;
            let unit = 1.0 / font.height_unscaled();
            let id = font.glyph_id(ch);
            // ab_glyph outline bounds are y-up: min = (x_min, y_max), max = (x_max, y_min).
            let ink = font.outline(id).map(|o| {
                let b = o.bounds;
                [
                    b.min.x * unit,
                    -b.min.y * unit,
                    b.max.x * unit,
                    -b.max.y * unit,
                ]
            });
            GlyphInfo {
                face: face_id,
                id,
                advance: font.h_advance_unscaled(id) * unit,
                ink,
            }
        });
        lock(&self.infos).insert((primary, ch), info);
        info
    }

    /// The glyph's coverage bitmap at a quantised size and sub-pixel offset.
    pub fn bitmap(&self, book: &FontBook, key: BitmapKey) -> Arc<GlyphBitmap> {
        if let Some(b) = lock(&self.bitmaps).map.get(&key) {
            return b.clone();
        }
        let bitmap = Arc::new(rasterise(book, key));
        self.rasterised.fetch_add(1, Ordering::Relaxed);
        let mut cache = lock(&self.bitmaps);
        if cache.bytes > MAX_BITMAP_BYTES {
            cache.map.clear();
            cache.bytes = 0;
        }
        cache.bytes += bitmap.coverage.len() + std::mem::size_of::<GlyphBitmap>();
        cache.map.insert(key, bitmap.clone());
        bitmap
    }

    /// How many bitmaps were rasterised (not served from the cache) so far.
    pub fn rasterised(&self) -> usize {
        self.rasterised.load(Ordering::Relaxed)
    }
}

fn rasterise(book: &FontBook, key: BitmapKey) -> GlyphBitmap {
    let face = book.face(key.face);
    let glyph = GlyphId(key.glyph).with_scale_and_position(
        PxScale::from(key.size_q as f32 / QUANTUM),
        point(f32::from(key.fx) / QUANTUM, f32::from(key.fy) / QUANTUM),
    );
    let Some(outlined) = face.font.outline_glyph(glyph) else {
        return GlyphBitmap {
            left: 0,
            top: 0,
            width: 0,
            height: 0,
            coverage: Vec::new(),
        };
    };
    let bounds = outlined.px_bounds();
    let (width, height) = (bounds.width() as usize, bounds.height() as usize);
    let mut coverage = vec![0u8; width * height];
    outlined.draw(|x, y, c| {
        let (x, y) = (x as usize, y as usize);
        if x < width && y < height {
            coverage[y * width + x] = (c.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    });
    GlyphBitmap {
        left: bounds.min.x as i32,
        top: bounds.min.y as i32,
        width,
        height,
        coverage,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
