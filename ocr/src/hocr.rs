//! Character boxes from tesseract's hOCR with `hocr_char_boxes=1`:
//! `<span class='ocrx_cinfo' title='x_bboxes 10 20 30 40; x_conf 99.1'>c</span>`.

use std::sync::OnceLock;

use regex::Regex;

/// `(text, [x0, y0, x1, y1], confidence)` of each recognised character, in reading order.
pub(crate) fn char_boxes(hocr: &str) -> Vec<(String, [i32; 4], f32)> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"class='ocrx_cinfo' title='x_bboxes (-?\d+) (-?\d+) (-?\d+) (-?\d+); x_conf ([\d.]+)'>([^<]*)</span>")
            .expect("static regex")
    });
    re.captures_iter(hocr)
        .filter_map(|c| {
            let n = |i: usize| c[i].parse::<i32>().ok();
            let bbox = [n(1)?, n(2)?, n(3)?, n(4)?];
            Some((unescape(&c[6]), bbox, c[5].parse().unwrap_or(0.0)))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_char_spans() {
        let h = "<span class='ocrx_word' id='word_1_1' title='bbox 1 2 30 40; x_wconf 96'><span class='ocrx_cinfo' title='x_bboxes 1 2 10 40; x_conf 99.5'>A</span><span class='ocrx_cinfo' title='x_bboxes 11 2 30 40; x_conf 98'>&amp;</span></span>";
        assert_eq!(
            char_boxes(h),
            [
                ("A".into(), [1, 2, 10, 40], 99.5),
                ("&".into(), [11, 2, 30, 40], 98.0)
            ]
        );
    }
}
