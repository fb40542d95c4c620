use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::LayoutError;

/// A canvas and the text lines placed on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Canvas width in pixels.
    pub width: u32,
    /// Canvas height in pixels.
    pub height: u32,
    /// Text lines in reading order.
    #[serde(default)]
    pub lines: Vec<TextLine>,
}

impl Layout {
    pub fn new(width: u32, height: u32, lines: Vec<TextLine>) -> Self {
        Layout {
            width,
            height,
            lines,
        }
    }

    /// Parses a layout from JSON. Unknown fields (e.g. a planner's `warnings`) are ignored.
    pub fn from_json(json: &str) -> Result<Self, LayoutError> {
        Ok(serde_json::from_str(json)?)
    }
}

/// One line of text and the box it must fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextLine {
    /// The text; `\n` stacks sub-lines inside the box.
    pub text: String,
    /// Box in canvas pixels, `[left, top, right, bottom]`.
    pub bbox: BBox,
    /// Font family name (`"DejaVu Sans Bold"`) or font file; default: the renderer's font.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub font: Option<String>,
    /// Text colour for previews and colour-aware models; default: none (white in the mask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Rgb>,
    /// Horizontal alignment inside the box; default: centre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align: Option<Align>,
}

impl TextLine {
    pub fn new(text: impl Into<String>, bbox: BBox) -> Self {
        TextLine {
            text: text.into(),
            bbox,
            font: None,
            color: None,
            align: None,
        }
    }
}

/// Horizontal alignment of text inside its box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    Left,
    #[default]
    Center,
    Right,
}

/// A box in canvas pixels: left and top inclusive, right and bottom exclusive. JSON:
/// `[left, top, right, bottom]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BBox {
    pub left: i32,
    pub top: i32,
    pub right: i32,
    pub bottom: i32,
}

impl BBox {
    pub const fn new(left: i32, top: i32, right: i32, bottom: i32) -> Self {
        BBox {
            left,
            top,
            right,
            bottom,
        }
    }

    /// Width; zero or negative for a degenerate box.
    pub fn width(&self) -> i32 {
        self.right.saturating_sub(self.left)
    }

    /// Height; zero or negative for a degenerate box.
    pub fn height(&self) -> i32 {
        self.bottom.saturating_sub(self.top)
    }

    /// True when the box has no area.
    pub fn is_empty(&self) -> bool {
        self.width() <= 0 || self.height() <= 0
    }

    /// The part of the box inside `other`, or `None` when they do not overlap.
    pub fn intersect(&self, other: &BBox) -> Option<BBox> {
        let b = BBox::new(
            self.left.max(other.left),
            self.top.max(other.top),
            self.right.min(other.right),
            self.bottom.min(other.bottom),
        );
        (!b.is_empty()).then_some(b)
    }

    /// True when `other` lies entirely inside this box.
    pub fn contains(&self, other: &BBox) -> bool {
        other.left >= self.left
            && other.top >= self.top
            && other.right <= self.right
            && other.bottom <= self.bottom
    }

    /// True when the two boxes share any area.
    pub fn overlaps(&self, other: &BBox) -> bool {
        self.intersect(other).is_some()
    }
}

impl Serialize for BBox {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.left, self.top, self.right, self.bottom].serialize(s)
    }
}

impl<'de> Deserialize<'de> for BBox {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let [left, top, right, bottom] = <[i32; 4]>::deserialize(d)?;
        Ok(BBox {
            left,
            top,
            right,
            bottom,
        })
    }
}

/// An sRGB colour. JSON: `"#rrggbb"` or `"#rgb"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub [u8; 3]);

impl std::str::FromStr for Rgb {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid colour {s:?}: expected \"#rrggbb\" or \"#rgb\"");
        let hex = s.strip_prefix('#').ok_or_else(bad)?;
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let digit = |i: usize| u8::from_str_radix(&hex[i..i + 1], 16).map_err(|_| bad());
        match hex.len() {
            3 => Ok(Rgb([digit(0)? * 17, digit(1)? * 17, digit(2)? * 17])),
            6 => {
                let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
                Ok(Rgb([byte(0)?, byte(2)?, byte(4)?]))
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Rgb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [r, g, b] = self.0;
        write!(f, "#{r:02x}{g:02x}{b:02x}")
    }
}

impl Serialize for Rgb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rgb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_field() {
        let json = r##"{"width":640,"height":480,"lines":[
            {"text":"Grand\nOpening","bbox":[10,20,300,200],"font":"Noto Sans","color":"#ff8000","align":"left"},
            {"text":"today","bbox":[10,220,300,260]}]}"##;
        let layout = Layout::from_json(json).unwrap();
        assert_eq!(layout.lines[0].color, Some(Rgb([255, 128, 0])));
        assert_eq!(layout.lines[0].align, Some(Align::Left));
        assert_eq!(layout.lines[1].font, None);
        let again = Layout::from_json(&serde_json::to_string(&layout).unwrap()).unwrap();
        assert_eq!(again, layout);
    }

    #[test]
    fn bad_json_says_what_is_wrong() {
        let err = Layout::from_json(
            r#"{"width":512,"height":512,"lines":[{"text":"a","bbox":[1,2,3]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("array of length 4"), "{err}");
        let err = Layout::from_json(
            r#"{"width":512,"height":512,"lines":[{"text":"a","bbox":[1,2,3,4],"color":"red"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("#rrggbb"), "{err}");
    }

    #[test]
    fn colours_parse_short_and_long_forms() {
        assert_eq!("#fff".parse::<Rgb>(), Ok(Rgb([255, 255, 255])));
        assert_eq!("#102030".parse::<Rgb>(), Ok(Rgb([16, 32, 48])));
        assert!("#12345".parse::<Rgb>().is_err());
        assert!("#gg0000".parse::<Rgb>().is_err());
        assert!("#é00".parse::<Rgb>().is_err());
    }

    #[test]
    fn box_geometry() {
        let a = BBox::new(0, 0, 10, 10);
        assert_eq!(
            a.intersect(&BBox::new(5, 5, 20, 20)),
            Some(BBox::new(5, 5, 10, 10))
        );
        assert_eq!(a.intersect(&BBox::new(10, 0, 20, 10)), None);
        assert!(BBox::new(3, 3, 3, 9).is_empty());
        assert!(a.contains(&BBox::new(2, 2, 10, 10)));
        assert!(!a.contains(&BBox::new(2, 2, 11, 10)));
    }
}
