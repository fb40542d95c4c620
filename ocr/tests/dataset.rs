//! The dataset builder on real files: each input kind, each kind of bad image, each filter,
//! the shard contents read back with the tar crate, planner export, resuming.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageEncoder, Luma, Rgba, RgbaImage};
use letterpress_layout::{BBox, Layout, TextLine};
use letterpress_ocr::dataset::{BuildConfig, BuildReport, NoProgress, build};
use letterpress_render::Renderer;
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("letterpress-dataset-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Black text on white: one line per entry, stacked in a `w`×`h` canvas.
fn poster(lines: &[&str], w: u32, h: u32) -> GrayImage {
    let n = lines.len() as i32;
    let slot = (h as i32 - 40) / n;
    let layout = Layout::new(
        w,
        h,
        lines
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let i = i as i32;
                TextLine::new(
                    *t,
                    BBox::new(
                        24,
                        20 + i * slot + 8,
                        w as i32 - 24,
                        20 + (i + 1) * slot - 8,
                    ),
                )
            })
            .collect(),
    );
    Renderer::with_default_font()
        .unwrap()
        .render(&layout)
        .unwrap()
        .inverse()
}

fn png_bytes(image: &GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::L8,
        )
        .unwrap();
    out
}

fn jpeg_bytes(image: &GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::L8,
        )
        .unwrap();
    out
}

fn config(input: &Path, output: &Path) -> BuildConfig {
    let mut c = BuildConfig::new(input, output);
    c.jobs = 2;
    c
}

fn run(c: &BuildConfig) -> BuildReport {
    build(c, &NoProgress).unwrap()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Index lines of all shards by source.
fn index_by_source(out: &Path) -> BTreeMap<String, Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".jsonl") && n.chars().next().unwrap().is_ascii_digit() && !n.contains('_')
        })
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    for f in files {
        for v in jsonl(&f) {
            let source = v["source"].as_str().unwrap().to_string();
            assert!(out.insert(source.clone(), v).is_none(), "{source} twice");
        }
    }
    out
}

/// Members of a tar shard: name → bytes.
fn tar_members(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn folder_with_sidecar_captions_writes_readable_shards_and_planner_data() {
    let dir = scratch("folder");
    let input = dir.join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let sale = png_bytes(&poster(&["Summer", "Sale"], 512, 512));
    std::fs::write(input.join("a.png"), &sale).unwrap();
    std::fs::write(input.join("a.txt"), "A poster for the summer sale\n").unwrap();
    std::fs::write(
        input.join("sub/b.jpg"),
        jpeg_bytes(&poster(&["Coffee", "House"], 640, 480)),
    )
    .unwrap();
    std::fs::write(
        input.join("sub/b.json"),
        r#"{"caption": "coffee house sign", "url": "http://example.com/b.jpg"}"#,
    )
    .unwrap();
    std::fs::write(
        input.join("c.png"),
        png_bytes(&poster(&["Jazz", "Night"], 512, 512)),
    )
    .unwrap();
    std::fs::write(input.join("notes.md"), "not an input").unwrap();

    let out = dir.join("out");
    let mut c = config(&input, &out);
    c.export_planner = true;
    c.shard_size = 2;
    let report = run(&c);
    assert_eq!(
        (report.inputs, report.shards, report.stats.kept),
        (3, 2, 3),
        "{report:?}"
    );

    let index = index_by_source(&out);
    assert_eq!(
        index.keys().collect::<Vec<_>>(),
        ["a.png", "c.png", "sub/b.jpg"]
    );
    let shard0 = tar_members(&out.join("00000.tar"));
    assert_eq!(
        shard0.keys().collect::<Vec<_>>(),
        [
            "000000.json",
            "000000.mask.png",
            "000000.png",
            "000000.txt",
            "000001.json",
            "000001.mask.png",
            "000001.png"
        ]
    );
    assert_eq!(shard0["000000.png"], sale, "the original bytes");
    assert_eq!(shard0["000000.txt"], b"A poster for the summer sale");
    let json: Value = serde_json::from_slice(&shard0["000000.json"]).unwrap();
    assert_eq!(json["caption"], "A poster for the summer sale");
    assert_eq!(json["source"], "a.png");
    assert_eq!(
        (json["width"].as_u64(), json["height"].as_u64()),
        (Some(512), Some(512))
    );
    let words: Vec<&str> = json["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["text"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["Summer", "Sale"]);
    let first = &json["lines"][0];
    let (b, g) = (&first["bbox"], &first["bbox_128"]);
    for i in 0..4 {
        let px = b[i].as_f64().unwrap();
        assert!(
            (px / 4.0 - g[i].as_f64().unwrap()).abs() <= 0.5,
            "grid = pixels / 4 at 512: {b} {g}"
        );
    }
    assert!(!json["chars"].as_array().unwrap().is_empty());
    assert!(json["layout_td2"].as_str().unwrap().starts_with("Summer "));
    assert_eq!(json["ocr"]["engine"], "tesseract");
    assert_eq!(json["ocr"]["version"], letterpress_ocr::tesseract_version());
    // The glyph mask: white text on black at the image's size, ink where the words are.
    let mask = image::load_from_memory(&shard0["000000.mask.png"])
        .unwrap()
        .to_luma8();
    assert_eq!(mask.dimensions(), (512, 512));
    let l = &json["lines"][0]["bbox"];
    let ink = (l[0].as_u64().unwrap()..l[2].as_u64().unwrap())
        .flat_map(|x| (l[1].as_u64().unwrap()..l[3].as_u64().unwrap()).map(move |y| (x, y)))
        .filter(|&(x, y)| mask.get_pixel(x as u32, y as u32).0[0] > 128)
        .count();
    assert!(ink > 500, "mask has ink inside the first line's box: {ink}");
    assert_eq!(mask.get_pixel(2, 2).0[0], 0);

    let shard1 = tar_members(&out.join("00001.tar"));
    let b: Value = serde_json::from_slice(&shard1["000010.json"]).unwrap();
    assert_eq!(b["source_json"]["url"], "http://example.com/b.jpg");
    assert_eq!(b["format"], "jpg");
    assert!(shard1.contains_key("000010.jpg"));

    // Planner data: FastChat conversations with TextDiffuser-2's prompt and answer format.
    let planner: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("planner.json")).unwrap()).unwrap();
    let planner = planner.as_array().unwrap();
    assert_eq!(planner.len(), 2, "only captioned samples");
    let conv = &planner[0]["conversations"];
    assert_eq!(
        planner[0]["id"], "000000",
        "shard 0, index 0; one digit for shards of 2"
    );
    assert_eq!(conv[0]["from"], "human");
    assert_eq!(
        conv[0]["value"],
        letterpress_layout::td2::planner_prompt("A poster for the summer sale", &[])
    );
    assert_eq!(conv[1]["from"], "gpt");
    assert_eq!(conv[1]["value"], json["layout_td2"]);
    let parsed = letterpress_layout::td2::parse(conv[1]["value"].as_str().unwrap(), &[]);
    assert_eq!(parsed.lines.len(), 2, "{parsed:?}");

    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("00000_stats.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            stats["seen"].as_u64(),
            stats["kept"].as_u64(),
            stats["errors"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert_eq!(stats["rejected"]["word_count"], 0);

    // A second run finds every shard complete and changes nothing.
    let before = std::fs::read(out.join("00000.tar")).unwrap();
    let again = run(&c);
    assert_eq!(again.shards_resumed, 2);
    assert_eq!(again.stats, report.stats);
    assert_eq!(std::fs::read(out.join("00000.tar")).unwrap(), before);
    // …and refuses other settings in the same folder.
    c.filters.max_words = 3;
    let e = build(&c, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("filters"), "{e}");
}

#[test]
fn file_list_with_captions() {
    let dir = scratch("list");
    std::fs::write(
        dir.join("x.png"),
        png_bytes(&poster(&["Open", "Late"], 512, 512)),
    )
    .unwrap();
    std::fs::write(
        dir.join("y.png"),
        png_bytes(&poster(&["Book", "Fair"], 512, 512)),
    )
    .unwrap();
    std::fs::write(
        dir.join("list.txt"),
        "# images\ny.png\tbook fair today\n\nx.png\tsomething else\nmissing.png\n",
    )
    .unwrap();
    let out = dir.join("out");
    let report = run(&config(&dir.join("list.txt"), &out));
    assert_eq!(report.inputs, 3);
    let index = index_by_source(&out);
    assert_eq!(index["y.png"]["status"], "kept");
    assert_eq!(index["y.png"]["caption"], "book fair today");
    assert_eq!(index["y.png"]["key"], "000000000", "list order is kept");
    assert_eq!(index["x.png"]["status"], "rejected");
    assert_eq!(index["x.png"]["filter"], "caption");
    assert_eq!(index["missing.png"]["kind"], "read");
}

/// An img2dataset-style shard: `key.jpg`, `key.txt`, `key.json` per sample.
#[test]
fn webdataset_shards_as_input() {
    let dir = scratch("wds");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for (shard, samples) in [
        (
            "00000.tar",
            vec![
                ("000000000", "Grand Opening"),
                ("000000001", "Fresh Market"),
            ],
        ),
        ("00001.tar", vec![("000010000", "Film Club")]),
    ] {
        let mut b = tar::Builder::new(std::fs::File::create(input.join(shard)).unwrap());
        let mut add = |name: String, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        for (key, text) in &samples {
            let words: Vec<&str> = text.split(' ').collect();
            add(format!("{key}.jpg"), &jpeg_bytes(&poster(&words, 512, 512)));
            add(
                format!("{key}.txt"),
                format!("poster saying {text}").as_bytes(),
            );
            add(format!("{key}.json"), format!(r#"{{"key": "{key}", "url": "http://example.com/{key}.jpg", "caption": "ignored, the txt wins"}}"#).as_bytes());
        }
        if shard == "00001.tar" {
            add(
                "000010001.json".into(),
                br#"{"status": "failed_to_download"}"#,
            );
        }
        b.finish().unwrap();
    }
    std::fs::write(input.join("00000_stats.json"), "{}").unwrap();
    let out = dir.join("out");
    let report = run(&config(&input, &out));
    assert_eq!(report.inputs, 4, "{report:?}");
    assert_eq!(report.stats.kept, 3, "{report:?}");
    let index = index_by_source(&out);
    assert_eq!(
        index["00000.tar/000000001"]["caption"],
        "poster saying Fresh Market"
    );
    assert_eq!(index["00001.tar/000010001"]["kind"], "no_image");
    let members = tar_members(&out.join("00000.tar"));
    let json: Value = serde_json::from_slice(&members["000000002.json"]).unwrap();
    assert_eq!(json["source"], "00001.tar/000010000");
    assert_eq!(
        json["source_json"]["url"],
        "http://example.com/000010000.jpg"
    );
    // A single .tar file is WebDataset input too.
    let single = run(&config(&input.join("00001.tar"), &dir.join("out1")));
    assert_eq!((single.inputs, single.stats.kept), (2, 1));
}

/// A PNG whose header claims `w`×`h`: a decompression bomb needs no more than that.
fn png_with_declared_size(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = png_bytes(&GrayImage::new(8, 8));
    // IHDR data starts at byte 16: width, height; its CRC covers type + data (bytes 12..29).
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn bad_images_are_listed_in_errors_and_valid_odd_ones_processed() {
    let dir = scratch("bad");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let text = poster(&["Winter", "Market"], 512, 512);
    let png = png_bytes(&text);
    let jpg = jpeg_bytes(&text);
    let w = |name: &str, bytes: &[u8]| std::fs::write(input.join(name), bytes).unwrap();
    w("empty.png", b"");
    w("notes.png", b"just some text, not an image\n");
    w("truncated.png", &png[..png.len() / 2]);
    w("truncated.jpg", &jpg[..jpg.len() / 3]);
    let mut corrupt = png.clone();
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 64] {
        *b ^= 0x5a;
    }
    w("corrupt.png", &corrupt);
    w("bomb.png", &png_with_declared_size(100_000, 100_000));
    w("animated.gif", b"GIF89a\x10\x00\x10\x00\x00\x00\x00;");

    // Valid images in unusual encodings are converted and processed.
    let deep = image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(512, 512, |x, y| {
        Luma([u16::from(text.get_pixel(x, y).0[0]) * 257])
    });
    image::DynamicImage::ImageLuma16(deep)
        .save(input.join("sixteen-bit.png"))
        .unwrap();
    // Black text on a transparent background: composited over white it reads.
    let alpha = RgbaImage::from_fn(512, 512, |x, y| {
        Rgba([0, 0, 0, 255 - text.get_pixel(x, y).0[0]])
    });
    alpha.save(input.join("alpha.png")).unwrap();
    let mut cmyk = Vec::new();
    let cmyk_pixels: Vec<u8> = text
        .as_raw()
        .iter()
        .flat_map(|&v| [0, 0, 0, 255 - v])
        .collect();
    jpeg_encoder::Encoder::new(&mut cmyk, 92)
        .encode(&cmyk_pixels, 512, 512, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    w("cmyk.jpg", &cmyk);

    let out = dir.join("out");
    let report = run(&config(&input, &out));
    assert_eq!(report.inputs, 10);
    let errors: BTreeMap<String, Value> = jsonl(&out.join("errors.jsonl"))
        .into_iter()
        .map(|v| (v["source"].as_str().unwrap().to_string(), v))
        .collect();
    for (name, v) in &errors {
        eprintln!("{name}: {} — {}", v["kind"], v["reason"]);
    }
    let kind = |name: &str| {
        errors
            .get(name)
            .map(|v| v["kind"].as_str().unwrap().to_string())
    };
    assert_eq!(kind("empty.png").as_deref(), Some("empty_file"));
    assert_eq!(kind("notes.png").as_deref(), Some("not_an_image"));
    assert!(matches!(
        kind("truncated.png").as_deref(),
        Some("truncated" | "decode")
    ));
    assert!(matches!(
        kind("truncated.jpg").as_deref(),
        Some("truncated" | "decode")
    ));
    assert!(matches!(kind("corrupt.png").as_deref(), Some("decode")));
    assert_eq!(kind("bomb.png").as_deref(), Some("too_many_pixels"));
    assert!(
        errors["bomb.png"]["reason"]
            .as_str()
            .unwrap()
            .contains("100000x100000")
    );
    assert_eq!(kind("animated.gif").as_deref(), Some("unsupported"));
    assert_eq!(errors.len(), 7, "{errors:?}");

    let index = index_by_source(&out);
    for name in ["sixteen-bit.png", "alpha.png", "cmyk.jpg"] {
        assert_eq!(index[name]["status"], "kept", "{name}: {}", index[name]);
    }
    let members = tar_members(&out.join("00000.tar"));
    let color = |key: &str| -> String {
        let v: Value = serde_json::from_slice(&members[&format!("{key}.json")]).unwrap();
        v["color_type"].as_str().unwrap().to_string()
    };
    let key = |name: &str| index[name]["key"].as_str().unwrap().to_string();
    assert_eq!(color(&key("sixteen-bit.png")), "L16");
    assert_eq!(color(&key("alpha.png")), "Rgba8");
    assert_eq!(color(&key("cmyk.jpg")), "Cmyk8");
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["errors"], 7);
    assert_eq!(stats["kept"], 3);
}

#[test]
fn each_filter_rejects_and_is_counted() {
    let dir = scratch("filters");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let w =
        |name: &str, image: &GrayImage| std::fs::write(input.join(name), png_bytes(image)).unwrap();
    w("keep.png", &poster(&["Grand", "Opening"], 512, 512));
    w("small.png", &poster(&["Grand", "Opening"], 300, 200));
    w(
        "wordy.png",
        &poster(
            &["one two three", "four five six", "seven eight nine"],
            512,
            512,
        ),
    );
    w("blank.png", &GrayImage::from_pixel(512, 512, Luma([255])));
    // Two small words in a corner of a large page.
    let mut sparse = GrayImage::from_pixel(1024, 1024, Luma([255]));
    image::imageops::overlay(&mut sparse, &poster(&["tiny", "text"], 256, 256), 0, 0);
    w("sparse.png", &sparse);
    w("caption.png", &poster(&["Fresh", "Bread"], 512, 512));
    std::fs::write(input.join("caption.txt"), "a photo of a cat").unwrap();

    // The filters on recognised text, with the first stage off…
    let out = dir.join("out");
    let mut c = config(&input, &out);
    c.first_stage = false;
    let report = run(&c);
    let index = index_by_source(&out);
    let status = |n: &str| {
        let v = &index[n];
        v["filter"]
            .as_str()
            .unwrap_or(v["status"].as_str().unwrap())
            .to_string()
    };
    // …and with it on (the default), where layout analysis rejects the blank page and the
    // sparse one before recognition.
    let staged = run(&config(&input, &dir.join("staged")));
    let staged_index = index_by_source(&dir.join("staged"));
    let staged_filter = |n: &str| staged_index[n]["filter"].as_str().unwrap().to_string();
    assert_eq!(staged_filter("blank.png"), "layout_word_count");
    assert_eq!(staged_filter("sparse.png"), "layout_text_area");
    assert_eq!(staged_filter("wordy.png"), "word_count");
    assert_eq!(staged.stats.kept, report.stats.kept);
    assert_eq!(status("keep.png"), "kept");
    assert_eq!(status("small.png"), "short_side");
    assert_eq!(status("wordy.png"), "word_count");
    assert_eq!(status("blank.png"), "word_count");
    assert_eq!(status("sparse.png"), "text_area");
    assert_eq!(status("caption.png"), "caption");
    let r = &report.stats.rejected;
    assert_eq!(
        (
            r["short_side"],
            r["word_count"],
            r["text_area"],
            r["caption"]
        ),
        (1, 2, 1, 1)
    );

    // Confidence: a threshold above anything tesseract reports rejects the poster; with the
    // filters off everything with any word is kept.
    let mut c = config(&input, &dir.join("strict"));
    c.filters.min_mean_confidence = 99.99;
    let strict = run(&c);
    assert_eq!(
        strict.stats.rejected["confidence"], 2,
        "keep.png and the sparse one"
    );
    let mut c = config(&input, &dir.join("loose"));
    c.filters = letterpress_ocr::dataset::Filters {
        min_side: 0,
        min_words: 0,
        max_words: usize::MAX,
        min_text_area: 0.0,
        min_mean_confidence: 0.0,
        min_caption_match: 0.0,
    };
    assert_eq!(run(&c).stats.kept, 6);

    // Resizing to 512 on the short side: boxes are in the resized image's pixels.
    let mut c = config(
        &input.join("sparse.png").with_file_name("keep.png"),
        &dir.join("x"),
    );
    c.input = input.clone();
    c.output = dir.join("resized");
    c.resize = Some(256);
    c.filters.min_side = 0;
    run(&c);
    let members = tar_members(&dir.join("resized/00000.tar"));
    let keep = index_by_source(&dir.join("resized"))["keep.png"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_slice(&members[&format!("{keep}.json")]).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["original_width"].as_u64()),
        (Some(256), Some(512))
    );
}
