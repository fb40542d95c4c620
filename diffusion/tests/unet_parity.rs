//! UNet2DConditionModel and ControlNetModel against diffusers (tools/make_fixtures.py).
//! sd1: int head count, conv projections, 3-channel hint; sd2: per-block heads, linear
//! projections, upcast_attention, transformer_layers_per_block [1, 2, 1], in_channels 9,
//! 1-channel hint.

mod common;

use letterpress_diffusion::{ControlNetModel, LoadOptions, UNet2DConditionModel, load};

#[test]
fn unet_and_controlnet_match_diffusers() {
    for kind in ["sd1", "sd2"] {
        let refs = common::refs(kind);
        let dir = common::fixtures().join(kind);
        let unet = load::<UNet2DConditionModel>(&dir.join("unet"), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{kind} unet: {e}"));
        let controlnet = load::<ControlNetModel>(&dir.join("controlnet"), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{kind} controlnet: {e}"));
        let sample = common::get(&refs, "unet.sample");
        let t = common::get(&refs, "unet.timestep");
        let states = common::get(&refs, "unet.encoder_hidden_states");
        let hint = common::get(&refs, "controlnet.cond");

        let out = unet
            .model
            .forward(sample, t, states, None)
            .expect("unet forward");
        common::assert_close(
            &format!("{kind} unet"),
            &out,
            common::get(&refs, "unet.out"),
        );

        for (mode, scale, guess) in [("scaled", 0.8, false), ("guess", 1.0, true)] {
            let res = controlnet
                .model
                .forward(sample, t, states, hint, scale, guess)
                .expect("controlnet forward");
            let n = refs
                .keys()
                .filter(|k| k.starts_with(&format!("controlnet.{mode}.down.")))
                .count();
            assert_eq!(res.down.len(), n, "{kind} {mode}: number of down residuals");
            for (i, d) in res.down.iter().enumerate() {
                common::assert_close(
                    &format!("{kind} controlnet {mode} down {i}"),
                    d,
                    common::get(&refs, &format!("controlnet.{mode}.down.{i}")),
                );
            }
            common::assert_close(
                &format!("{kind} controlnet {mode} mid"),
                &res.mid,
                common::get(&refs, &format!("controlnet.{mode}.mid")),
            );
            let out = unet
                .model
                .forward(sample, t, states, Some(&res))
                .expect("unet forward with residuals");
            common::assert_close(
                &format!("{kind} unet + controlnet {mode}"),
                &out,
                common::get(&refs, &format!("unet.out_with_controlnet.{mode}")),
            );
        }
    }
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    let dir = common::fixtures().join("sd1");
    let unet =
        load::<UNet2DConditionModel>(&dir.join("unet"), &LoadOptions::default()).expect("load");
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let states = tch::Tensor::zeros([1, 77, 8], opts);
    let t = tch::Tensor::from(10.0f32);
    assert!(
        unet.model
            .forward(&tch::Tensor::zeros([1, 9, 8, 8], opts), &t, &states, None)
            .is_err()
    );
    assert!(
        unet.model
            .forward(
                &tch::Tensor::zeros([1, 4, 8, 8], opts),
                &t,
                &tch::Tensor::zeros([1, 77, 5], opts),
                None
            )
            .is_err()
    );
    assert!(
        unet.model
            .forward(
                &tch::Tensor::zeros([1, 4, 8, 8], opts),
                &tch::Tensor::zeros([3], opts),
                &states,
                None
            )
            .is_err()
    );
    assert!(
        unet.model
            .forward(&tch::Tensor::zeros([1, 4, 8, 8], opts), &t, &states, None)
            .is_ok()
    );
}
