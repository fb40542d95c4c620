//! Token ids equal to transformers' CLIPTokenizer for every recorded prompt and tokenizer, and
//! TextDiffuser-2 input ids equal to the reference construction (tools/make_fixtures.py).

mod common;

use letterpress_diffusion::ClipTokenizer;
use serde_json::Value;

fn record() -> Value {
    let path = common::fixtures().join("tokenizer_ids.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer_ids.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_i64().expect("int id"))
        .collect()
}

#[test]
fn clip_ids_equal_transformers_for_all_prompts() {
    let record = record();
    let prompts: Vec<&str> = record["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| p.as_str().expect("str"))
        .collect();
    assert!(prompts.len() >= 30);
    let tokenizers = record["tokenizers"].as_object().expect("tokenizers");
    assert_eq!(tokenizers.len(), 3);
    let mut compared = 0;
    for (name, entry) in tokenizers {
        let dir = common::fixtures().join(entry["folder"].as_str().expect("folder"));
        let tok = ClipTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            tok.pad_id(),
            entry["pad_token_id"].as_i64().expect("pad id"),
            "{name} pad id"
        );
        for (prompt, expected) in prompts.iter().zip(entry["ids"].as_array().expect("ids")) {
            assert_eq!(
                tok.encode_padded(prompt),
                ids(expected),
                "{name}: {prompt:?}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 3 * prompts.len());
}

#[test]
fn a_photo_of_a_cat() {
    let tok =
        ClipTokenizer::from_dir(&common::fixtures().join("sd1/tokenizer")).expect("tokenizer");
    assert_eq!(
        tok.encode_unpadded("a photo of a cat"),
        [49406, 320, 1125, 539, 320, 2368, 49407]
    );
    assert_eq!(tok.len(), 49408);
}

#[test]
fn textdiffuser2_tokens_and_input_ids() {
    let tok =
        ClipTokenizer::from_dir(&common::fixtures().join("td2_tokenizer")).expect("tokenizer");
    assert_eq!(tok.len(), 51583);
    assert_eq!(tok.token_to_id("l0"), Some(49408));
    assert_eq!(tok.token_to_id("b519"), Some(49408 + 4 * 519 + 3));
    assert_eq!(tok.token_to_id("[0]"), Some(51488));
    assert_eq!(tok.token_to_id("[ ]"), Some(51582));
    let record = record();
    let cases = record["td2_inputs"].as_array().expect("td2 cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let caption = case["caption"].as_str().expect("caption");
        let lines: Vec<Vec<String>> = case["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| {
                l.as_array()
                    .expect("line")
                    .iter()
                    .map(|t| t.as_str().expect("token").to_string())
                    .collect()
            })
            .collect();
        assert_eq!(
            tok.textdiffuser2_input_ids(caption, &lines),
            ids(&case["ids"]),
            "{caption:?}"
        );
    }
}

/// A `tokenizer.json`-only folder (what fast tokenizers save) gives the same ids as the
/// vocab.json + merges.txt + added_tokens.json folder checked against transformers above.
#[test]
fn tokenizer_json_folders_match_vocab_files() {
    let src = common::fixtures().join("td2_tokenizer");
    let reference = ClipTokenizer::from_dir(&src).expect("tokenizer");
    let vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("vocab.json")).unwrap()).unwrap();
    let merges: Vec<String> = std::fs::read_to_string(src.join("merges.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let added: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(src.join("added_tokens.json")).unwrap())
            .unwrap();
    let added_tokens: Vec<serde_json::Value> = added
        .iter()
        .map(|(content, id)| serde_json::json!({"id": id, "content": content, "special": false}))
        .collect();
    for (style, merges_json) in [
        ("strings", serde_json::json!(merges)),
        (
            "pairs",
            serde_json::json!(
                merges
                    .iter()
                    .map(|m| m.split(' ').collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            ),
        ),
    ] {
        let dir = std::env::temp_dir().join(format!(
            "letterpress-tokjson-{style}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = serde_json::json!({"added_tokens": added_tokens, "model": {"type": "BPE", "vocab": vocab, "merges": merges_json}});
        std::fs::write(dir.join("tokenizer.json"), file.to_string()).unwrap();
        std::fs::copy(
            src.join("tokenizer_config.json"),
            dir.join("tokenizer_config.json"),
        )
        .unwrap();
        let tok = ClipTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{style}: {e}"));
        assert_eq!(tok.len(), reference.len(), "{style}");
        for text in [
            "a photo of a cat",
            "A Poster that says 'SUMMER SALE' — 50% off!!",
            "l25 t89 r100 b120 [H] [i] [ ] [!] poster",
            "naïve café  résumé\tdon't",
            "",
        ] {
            assert_eq!(
                tok.encode_padded(text),
                reference.encode_padded(text),
                "{style}: {text:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
