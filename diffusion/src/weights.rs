//! Weight loading, in one place (docs/architecture.md, "Where each format lives"): the
//! diffusers folder layout, file selection
//! (`.safetensors`, `.fp16` variants), key renames (transformers' `text_model.` prefix, the legacy
//! VAE attention names), the dtype policy, and an error that lists missing and unexpected keys.
//! Pickled checkpoints (`.bin`, `.ckpt`, `.pt`, `.pth`) are refused, never unpickled.
//!
//! A load is lean: the model is built with [`Init::Empty`] (allocated, no random draw and no
//! fill), the file is memory-mapped once (mapped.rs), and after the key check has proven that the
//! file has a value for every variable, each variable takes over its tensor from the mapping,
//! cast to the load's dtype where the file's differs. The values are those a copy into fp32
//! variables followed by a cast of the store gives, which is what loading did before.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tch::{Device, Kind, Tensor, nn};

use crate::error::{Error, Result, TorchContext};

/// The dtype policy: fp32 on CPU (half-precision matmuls are slow there and the parity tests
/// run in fp32); fp16 on CUDA, which every SD 1.x/2.x checkpoint was trained and released in.
/// bf16 is available through [`LoadOptions::kind`].
pub fn default_kind(device: Device) -> Kind {
    if device.is_cuda() {
        Kind::Half
    } else {
        Kind::Float
    }
}

/// How to load a model folder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the weights go. Default: CPU.
    pub device: Device,
    /// Parameter dtype. Default: [`default_kind`] of the device. The models cast their float
    /// inputs to it (and to the device) explicitly, so callers may pass fp32 tensors.
    pub kind: Option<Kind>,
    /// Weight file variant, e.g. `Some("fp16")` for `diffusion_pytorch_model.fp16.safetensors`.
    /// Default: none, which still falls back to the `fp16` file when it is the only one there.
    pub variant: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            kind: None,
            variant: None,
        }
    }
}

impl LoadOptions {
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or_else(|| default_kind(self.device))
    }
}

/// How a model build gives its variables their first values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// torch.nn's default initialisation, drawn from torch's global generator: for models
    /// trained from scratch and benchmarks.
    #[default]
    Random,
    /// Allocated, never written, nothing drawn: for a model whose every variable is then given
    /// its value from a file. The loaders prove that none is left out (a variable the file has
    /// no value for is a missing-key error), so no unwritten memory is ever read.
    Empty,
}

/// A model that is built from a diffusers/transformers `config.json` and filled from a
/// safetensors file in the same folder.
pub trait FromPretrained: Sized {
    type Config: DeserializeOwned;
    /// File stem of the weights: `diffusion_pytorch_model` (diffusers) or `model` (transformers).
    const WEIGHTS_STEM: &'static str;

    /// Builds the model with its variables under `p`, initialised as the build's [`Init`] says
    /// ([`Init::Random`] unless called through [`build_with`]).
    fn build(p: nn::Path, config: &Self::Config) -> Result<Self>;

    /// Maps a key of the file to the variable name, or `None` for a key that is known to carry
    /// no parameter (e.g. transformers' `position_ids` buffer).
    fn rename_key(key: &str) -> Option<String> {
        Some(key.to_string())
    }
}

/// A model with the variable store that owns its parameters.
pub struct Loaded<M> {
    pub model: M,
    pub var_store: nn::VarStore,
}

impl<M: std::fmt::Debug> std::fmt::Debug for Loaded<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("model", &self.model)
            .field("variables", &self.var_store.len())
            .finish()
    }
}

/// Reads and parses a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds `M` under `p` with its variables initialised as `init` says.
pub fn build_with<M: FromPretrained>(p: nn::Path, config: &M::Config, init: Init) -> Result<M> {
    crate::layers::with_init(init, || M::build(p, config))
}

/// Builds `M` from `config` with random weights (for benchmarks, tests and training from
/// scratch): fp32 draws, then cast to `kind`.
pub fn build_random<M: FromPretrained>(
    config: &M::Config,
    device: Device,
    kind: Kind,
) -> Result<Loaded<M>> {
    let mut var_store = nn::VarStore::new(device);
    let model = build_with::<M>(var_store.root(), config, Init::Random)?;
    if kind != Kind::Float {
        var_store.set_kind(kind);
    }
    var_store.freeze();
    Ok(Loaded { model, var_store })
}

/// Loads a model folder such as `unet/`, `vae/`, `controlnet/` or `text_encoder/`.
pub fn load<M: FromPretrained>(dir: &Path, options: &LoadOptions) -> Result<Loaded<M>> {
    let config: M::Config = read_json(&dir.join("config.json"))?;
    load_with_config(dir, &config, options)
}

/// As [`load`], with a config the caller already has (e.g. one changed on purpose).
pub fn load_with_config<M: FromPretrained>(
    dir: &Path,
    config: &M::Config,
    options: &LoadOptions,
) -> Result<Loaded<M>> {
    let file = find_weights(dir, M::WEIGHTS_STEM, options.variant.as_deref())?;
    let tensors = read_renamed(&file, M::rename_key)?;
    load_tensors(config, tensors, &file, options)
}

/// Builds `M` from `config` without initial values and gives every variable its tensor of
/// `by_name` (already read and renamed; `source` names the file in errors).
pub(crate) fn load_tensors<M: FromPretrained>(
    config: &M::Config,
    by_name: HashMap<String, Tensor>,
    source: &Path,
    options: &LoadOptions,
) -> Result<Loaded<M>> {
    let mut var_store = nn::VarStore::new(options.device);
    // The store is empty: this only sets the dtype its variables are allocated in.
    var_store.set_kind(options.kind());
    let model = build_with::<M>(var_store.root(), config, Init::Empty)?;
    fill_tensors(&var_store, by_name, source, Fill::Adopt)?;
    var_store.freeze();
    Ok(Loaded { model, var_store })
}

/// A diffusers pipeline folder: `model_index.json` naming its components (`unet`, `vae`,
/// `text_encoder`, `tokenizer`, `controlnet`, `scheduler`, …), each in a subfolder.
#[derive(Debug, Clone)]
pub struct PipelineFolder {
    root: PathBuf,
    /// component name → (library, class), e.g. `unet` → (`diffusers`, `UNet2DConditionModel`).
    components: BTreeMap<String, (String, String)>,
}

impl PipelineFolder {
    /// Reads `root/model_index.json`.
    pub fn open(root: &Path) -> Result<Self> {
        let index: BTreeMap<String, serde_json::Value> = read_json(&root.join("model_index.json"))?;
        let components = index
            .into_iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .filter_map(|(k, v)| match v.as_array().map(Vec::as_slice) {
                // `[null, null]` marks a component the pipeline was saved without.
                Some(
                    [
                        serde_json::Value::String(lib),
                        serde_json::Value::String(class),
                    ],
                ) => Some((k, (lib.clone(), class.clone()))),
                _ => None,
            })
            .collect();
        Ok(Self {
            root: root.to_path_buf(),
            components,
        })
    }

    /// The class `model_index.json` gives a component, e.g. `("diffusers", "AutoencoderKL")`.
    pub fn class(&self, name: &str) -> Option<(&str, &str)> {
        self.components
            .get(name)
            .map(|(l, c)| (l.as_str(), c.as_str()))
    }

    /// The subfolder of a component, checked to be listed and present.
    pub fn component(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        if !self.components.contains_key(name) {
            let listed: Vec<&str> = self.components.keys().map(String::as_str).collect();
            return Err(Error::WeightsNotFound {
                dir: self.root.clone(),
                expected: format!(
                    "component {name:?} in model_index.json (it lists {})",
                    listed.join(", ")
                ),
            });
        }
        if !dir.is_dir() {
            return Err(Error::WeightsNotFound {
                dir,
                expected: format!("the {name} folder that model_index.json lists"),
            });
        }
        Ok(dir)
    }

    /// Loads a model component, e.g. `folder.load::<UNet2DConditionModel>("unet", &options)`.
    pub fn load<M: FromPretrained>(&self, name: &str, options: &LoadOptions) -> Result<Loaded<M>> {
        load(&self.component(name)?, options)
    }
}

pub(crate) const PICKLE_EXTENSIONS: [&str; 4] = ["bin", "ckpt", "pt", "pth"];

pub(crate) fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if PICKLE_EXTENSIONS.contains(&ext) {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(Error::PickleRefused {
            path: path.to_path_buf(),
            file,
        });
    }
    Ok(())
}

/// Picks the weight file in `dir`: `{stem}.{variant}.safetensors` when a variant is asked for,
/// else `{stem}.safetensors`, else `{stem}.fp16.safetensors` (folders that ship only that).
/// A sharded save is found by its index, `{name}.index.json`, which [`fill`] also reads.
pub fn find_weights(dir: &Path, stem: &str, variant: Option<&str>) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(v) = variant {
        candidates.push(format!("{stem}.{v}.safetensors"));
    }
    candidates.push(format!("{stem}.safetensors"));
    if variant.is_none() {
        candidates.push(format!("{stem}.fp16.safetensors"));
    }
    for name in &candidates {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
        let index = dir.join(format!("{name}.index.json"));
        if index.is_file() {
            return Ok(index);
        }
    }
    // No safetensors: say so precisely when there is a pickle instead.
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut pickles: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e))
            })
            .collect();
        pickles.sort();
        if let Some(p) = pickles.first() {
            refuse_pickle(p)?;
        }
    }
    Err(Error::WeightsNotFound {
        dir: dir.to_path_buf(),
        expected: candidates.join(" or "),
    })
}

/// The shard files a `*.safetensors.index.json` names in its `weight_map`, in sorted order.
fn shards(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: Index = read_json(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = parsed
        .weight_map
        .into_values()
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    for f in &files {
        refuse_pickle(f)?;
    }
    Ok(files)
}

/// Copies every tensor of the safetensors `file` (or of every shard of a
/// `*.safetensors.index.json`) into the matching variable of `var_store` (casting dtype and
/// moving device), after checking that the key sets and shapes agree.
pub fn fill(
    var_store: &nn::VarStore,
    file: &Path,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<()> {
    let by_name = read_renamed(file, rename)?;
    fill_tensors(var_store, by_name, file, Fill::Copy)
}

/// The tensors of `file` (or of every shard of a `*.safetensors.index.json`), each file mapped
/// once, under the names `rename` gives them (keys it maps to `None` are left out).
fn read_renamed(
    file: &Path,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Tensor>> {
    refuse_pickle(file)?;
    let is_index = file.to_string_lossy().ends_with(".index.json");
    let files = if is_index {
        shards(file)?
    } else {
        vec![file.to_path_buf()]
    };
    let mut by_name = HashMap::new();
    for f in &files {
        for (key, tensor) in crate::mapped::read(f)? {
            if let Some(name) = rename(&key) {
                by_name.insert(name, tensor);
            }
        }
    }
    Ok(by_name)
}

/// How [`fill_tensors`] gives a variable its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Copy into the variable's own memory: for variables others may already share (a
    /// training run resuming into its models).
    Copy,
    /// The variable takes over the file's tensor, cast to its dtype and device where they
    /// differ (a view of the mapping where not): for a model just built with [`Init::Empty`].
    Adopt,
}

/// Gives every variable of `var_store` its tensor of `by_name` (read and renamed; `source`
/// names the file in errors), after checking that the key sets and shapes agree: nothing is
/// written unless every variable has a value.
pub(crate) fn fill_tensors(
    var_store: &nn::VarStore,
    by_name: HashMap<String, Tensor>,
    source: &Path,
    how: Fill,
) -> Result<()> {
    let file = source;
    let variables: BTreeMap<String, Tensor> = var_store.variables().into_iter().collect();
    let missing: Vec<String> = variables
        .keys()
        .filter(|k| !by_name.contains_key(*k))
        .cloned()
        .collect();
    let mut unexpected: Vec<String> = by_name
        .keys()
        .filter(|k| !variables.contains_key(*k))
        .cloned()
        .collect();
    unexpected.sort();
    let mut mismatched = Vec::new();
    let mut sources = Vec::with_capacity(variables.len());
    for (name, var) in &variables {
        let Some(src) = by_name.get(name) else {
            continue;
        };
        let (want, have) = (var.size(), src.size());
        let src = if want == have {
            src.shallow_clone()
        } else if have.len() == 4 && have[2..] == [1, 1] && want.as_slice() == &have[..2] {
            // 1x1-convolution projections of LDM-era VAE attention, stored [C, C, 1, 1].
            src.f_reshape(&want)?
        } else {
            mismatched.push(format!("{name}: file {have:?}, model {want:?}"));
            continue;
        };
        sources.push((var.shallow_clone(), src));
    }
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        return Err(Error::KeyMismatch {
            path: file.to_path_buf(),
            missing,
            unexpected,
            mismatched,
        });
    }
    let context = || format!("copying weights from {}", file.display());
    tch::no_grad(|| -> Result<()> {
        for (mut var, src) in sources {
            match how {
                Fill::Copy => {
                    var.f_copy_(&src).ctx(context())?;
                }
                Fill::Adopt => {
                    let value = cast_like_copy(&src, var.kind(), var.device()).ctx(context())?;
                    var.f_set_data(&value).ctx(context())?;
                }
            }
        }
        Ok(())
    })
}

/// `src` with the values a variable of `kind` on `device` ends up with when `src` is copied
/// into an fp32 variable that is then cast to `kind` (how loading worked before variables
/// adopted their tensors). The fp32 step is skipped where it changes nothing: fp16, bf16 and
/// fp32 values survive it exactly, so such a tensor already of `kind` is used as it is.
fn cast_like_copy(src: &Tensor, kind: Kind, device: Device) -> Result<Tensor, tch::TchError> {
    let src = src.f_to_device(device)?;
    let exact_in_fp32 = matches!(src.kind(), Kind::Float | Kind::Half | Kind::BFloat16);
    let value = if src.kind() == kind && exact_in_fp32 {
        src
    } else {
        src.f_to_kind(Kind::Float)?.f_to_kind(kind)?
    };
    value.f_contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("letterpress-weights-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn pickles_are_refused_with_a_conversion_hint() {
        let dir = tmpdir("pickle");
        std::fs::write(dir.join("diffusion_pytorch_model.bin"), b"not read").expect("write");
        let err = find_weights(&dir, "diffusion_pytorch_model", None).expect_err("must refuse");
        let msg = err.to_string();
        assert!(matches!(err, Error::PickleRefused { .. }), "{msg}");
        assert!(
            msg.contains("save_file") && msg.contains("safe_serialization=True"),
            "{msg}"
        );
        let err = fill(
            &nn::VarStore::new(Device::Cpu),
            &dir.join("model.ckpt"),
            |k| Some(k.into()),
        );
        assert!(matches!(err, Err(Error::PickleRefused { .. })));
    }

    #[test]
    fn variant_selection_and_fallback() {
        let dir = tmpdir("variant");
        assert!(matches!(
            find_weights(&dir, "model", None),
            Err(Error::WeightsNotFound { .. })
        ));
        std::fs::write(dir.join("model.fp16.safetensors"), b"").expect("write");
        assert_eq!(
            find_weights(&dir, "model", None).expect("fp16 fallback"),
            dir.join("model.fp16.safetensors")
        );
        std::fs::write(dir.join("model.safetensors"), b"").expect("write");
        assert_eq!(
            find_weights(&dir, "model", None).expect("plain"),
            dir.join("model.safetensors")
        );
        assert_eq!(
            find_weights(&dir, "model", Some("fp16")).expect("variant"),
            dir.join("model.fp16.safetensors")
        );
        assert_eq!(
            find_weights(&dir, "model", Some("bf16")).expect("variant falls back"),
            dir.join("model.safetensors")
        );
    }

    #[test]
    fn missing_unexpected_and_mismatched_keys_are_listed() {
        let dir = tmpdir("keys");
        let file = dir.join("w.safetensors");
        let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let c = Tensor::zeros([5], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[("a.weight", &a), ("b.bias", &b), ("extra", &c)], &file)
            .expect("write");
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = root
            .sub("a")
            .f_var("weight", &[3, 2], nn::Init::Const(0.))
            .expect("var");
        let _ = root
            .sub("b")
            .f_var("bias", &[4], nn::Init::Const(0.))
            .expect("var");
        let _ = root
            .sub("c")
            .f_var("weight", &[1], nn::Init::Const(0.))
            .expect("var");
        match fill(&vs, &file, |k| Some(k.into())) {
            Err(Error::KeyMismatch {
                missing,
                unexpected,
                mismatched,
                path,
            }) => {
                assert_eq!(missing, ["c.weight"]);
                assert_eq!(unexpected, ["extra"]);
                assert_eq!(mismatched, ["a.weight: file [2, 3], model [3, 2]"]);
                assert_eq!(path, file);
            }
            other => panic!("expected KeyMismatch, got {:?}", other.err()),
        }
    }
}
