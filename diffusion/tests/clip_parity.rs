//! CLIPTextModel against transformers (hidden states recorded by tools/make_fixtures.py).

mod common;

use letterpress_diffusion::{ClipTextModel, LoadOptions, load};

#[test]
fn text_encoder_matches_transformers() {
    // sd1: quick_gelu, `text_model.`-prefixed keys, fp16 weights in model.safetensors;
    // sd2: gelu, transformers-5 keys, only model.fp16.safetensors.
    for kind in ["sd1", "sd2"] {
        let refs = common::refs(kind);
        let text = load::<ClipTextModel>(
            &common::fixtures().join(kind).join("text_encoder"),
            &LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let ids = common::get(&refs, "text.input_ids");
        let last = text.model.forward(ids, 0).expect("forward");
        common::assert_close(
            &format!("{kind} text_encoder last"),
            &last,
            common::get(&refs, "text.last_hidden_state"),
        );
        let penultimate = text.model.forward(ids, 1).expect("forward");
        common::assert_close(
            &format!("{kind} text_encoder penultimate"),
            &penultimate,
            common::get(&refs, "text.penultimate"),
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    let text = load::<ClipTextModel>(
        &common::fixtures().join("sd1/text_encoder"),
        &LoadOptions::default(),
    )
    .expect("load");
    let too_long = tch::Tensor::zeros([1, 78], (tch::Kind::Int64, tch::Device::Cpu));
    assert!(text.model.forward(&too_long, 0).is_err());
    let out_of_vocab = tch::Tensor::from_slice(&[49406i64, 60000]).unsqueeze(0);
    assert!(text.model.forward(&out_of_vocab, 0).is_err());
    let ids = tch::Tensor::from_slice(&[49406i64, 49407]).unsqueeze(0);
    assert!(
        text.model.forward(&ids, 3).is_err(),
        "clip_skip beyond depth"
    );
}
