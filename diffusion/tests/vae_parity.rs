//! AutoencoderKL against diffusers (tools/make_fixtures.py): encode (mean, logvar) and decode.
//! sd1's weights carry the legacy `query/key/value/proj_attn` attention keys.

mod common;

use letterpress_diffusion::{AutoencoderKL, LoadOptions, load};

#[test]
fn vae_matches_diffusers() {
    for kind in ["sd1", "sd2"] {
        let refs = common::refs(kind);
        let vae = load::<AutoencoderKL>(
            &common::fixtures().join(kind).join("vae"),
            &LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let dist = vae
            .model
            .encode(common::get(&refs, "vae.image"))
            .expect("encode");
        common::assert_close(
            &format!("{kind} vae mean"),
            &dist.mean,
            common::get(&refs, "vae.mean"),
        );
        common::assert_close(
            &format!("{kind} vae logvar"),
            &dist.logvar,
            common::get(&refs, "vae.logvar"),
        );
        let decoded = vae
            .model
            .decode(common::get(&refs, "vae.latents"))
            .expect("decode");
        common::assert_close(
            &format!("{kind} vae decode"),
            &decoded,
            common::get(&refs, "vae.decoded"),
        );
    }
}

#[test]
fn scaling_factor_comes_from_config() {
    let sd1 = load::<AutoencoderKL>(&common::fixtures().join("sd1/vae"), &LoadOptions::default())
        .expect("load");
    let sd2 = load::<AutoencoderKL>(&common::fixtures().join("sd2/vae"), &LoadOptions::default())
        .expect("load");
    assert_eq!(sd1.model.config().scaling_factor, 0.18215);
    assert_eq!(sd2.model.config().scaling_factor, 0.13025);
}
