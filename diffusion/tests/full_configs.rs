//! The released configurations build exactly the parameters diffusers/transformers build:
//! same names, same shapes (SD 1.5 UNet, ControlNet and VAE, CLIP ViT-L/14 text, SD 2.1 UNet,
//! OpenCLIP ViT-H text). tools/make_fixtures.py records each config as the library serialises
//! it, plus a SHA-256 of the sorted `name [shape]` lines of its state dict, so a real
//! checkpoint of that family loads with no missing or unexpected key.

mod common;

use letterpress_diffusion::tch::{Device, Kind, nn};
use letterpress_diffusion::{
    AutoencoderKL, ClipTextModel, ControlNetModel, FromPretrained, UNet2DConditionModel,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn manifest<M: FromPretrained>(config: &Value) -> (usize, String) {
    let config: M::Config = serde_json::from_value(config.clone()).expect("config deserialises");
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Half); // half the memory of fp32; only names and shapes matter here
    let _model = M::build(vs.root(), &config).expect("builds");
    let mut lines: Vec<String> = vs
        .variables()
        .iter()
        .map(|(k, t)| format!("{k} {:?}", t.size()))
        .collect();
    lines.sort();
    let digest = Sha256::digest(lines.join("\n").as_bytes());
    (
        lines.len(),
        digest.iter().map(|b| format!("{b:02x}")).collect(),
    )
}

#[test]
fn released_configurations_have_the_reference_parameters() {
    let path = common::fixtures().join("full_manifests.json");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("full_manifests.json"))
            .expect("JSON");
    let entries = record.as_object().expect("object");
    assert_eq!(entries.len(), 6);
    // One model at a time: the SD UNets are 860M parameters.
    for (name, entry) in entries {
        let config = &entry["config"];
        let (count, sha) = match entry["class"].as_str().expect("class") {
            "UNet2DConditionModel" => manifest::<UNet2DConditionModel>(config),
            "ControlNetModel" => manifest::<ControlNetModel>(config),
            "AutoencoderKL" => manifest::<AutoencoderKL>(config),
            "CLIPTextModel" => manifest::<ClipTextModel>(config),
            other => panic!("{name}: unknown class {other}"),
        };
        println!("{name}: {count} parameters");
        assert_eq!(
            count as u64,
            entry["count"].as_u64().expect("count"),
            "{name}: parameter count"
        );
        assert_eq!(
            sha,
            entry["sha256"].as_str().expect("sha"),
            "{name}: names or shapes differ from the reference"
        );
    }
}
