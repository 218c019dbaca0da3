//! The loader is strict: a missing, an extra or a wrong-shaped tensor is an error naming the key;
//! f16 and bf16 on disk load; sharded checkpoints (index + shards) load like single files.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use i2vgen::loading::config::parse;
use i2vgen::loading::folder::{Folder, TensorSource, WeightFiles, index_shards, select_weight_files};
use i2vgen::loading::weights::Weights;
use i2vgen::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

pub type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn vae_dir() -> std::path::PathBuf {
    Path::new(common::FIXTURES).join("tiny-i2vgen/vae")
}

fn vae_config() -> AutoencoderKLConfig {
    parse::<AutoencoderKLConfig>(&std::fs::read_to_string(vae_dir().join("config.json")).unwrap()).unwrap().config
}

pub fn vae_tensors() -> Tensors {
    let bytes = std::fs::read(vae_dir().join("diffusion_pytorch_model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors().into_iter().map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect()
}

pub fn serialize(tensors: &Tensors) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (dtype, shape, data))| (k.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load(files: &[Vec<u8>]) -> i2vgen::Result<()> {
    let slices: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let mut w = Weights::from_safetensors(&slices, &common::cpu())?;
    AutoencoderKL::load(&mut w, &vae_config())?;
    w.finish()
}

#[test]
fn the_fixture_loads() {
    load(&[serialize(&vae_tensors())]).unwrap();
}

#[test]
fn a_missing_tensor_is_named() {
    let mut tensors = vae_tensors();
    tensors.remove("decoder.mid_block.attentions.0.to_q.weight");
    let err = load(&[serialize(&tensors)]).unwrap_err().to_string();
    assert!(err.contains("decoder.mid_block.attentions.0.to_q.weight"), "{err}");
}

#[test]
fn an_extra_tensor_is_named() {
    let mut tensors = vae_tensors();
    tensors.insert("encoder.extra.weight".into(), (Dtype::F32, vec![2], vec![0; 8]));
    let err = load(&[serialize(&tensors)]).unwrap_err().to_string();
    assert!(err.contains("encoder.extra.weight") && err.contains("does not use"), "{err}");
}

#[test]
fn a_wrong_shape_is_named() {
    let mut tensors = vae_tensors();
    let entry = tensors.get_mut("encoder.conv_in.bias").unwrap();
    entry.1 = vec![entry.1[0] / 2, 2];
    let err = load(&[serialize(&tensors)]).unwrap_err().to_string();
    assert!(err.contains("encoder.conv_in.bias") && err.contains("shape"), "{err}");
}

#[test]
fn half_precision_on_disk_loads_as_rounded_f32() {
    let original = vae_tensors();
    for (dtype, round) in [
        (Dtype::F16, (|v: f32| half::f16::from_f32(v).to_f32()) as fn(f32) -> f32),
        (Dtype::BF16, |v: f32| half::bf16::from_f32(v).to_f32()),
    ] {
        let converted: Tensors = original
            .iter()
            .map(|(k, (_, shape, data))| {
                let values = i2vgen::loading::weights::to_f32(Dtype::F32, data, k).unwrap();
                let bytes = values
                    .iter()
                    .flat_map(|&v| match dtype {
                        Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                        _ => half::bf16::from_f32(v).to_le_bytes(),
                    })
                    .collect();
                (k.clone(), (dtype, shape.clone(), bytes))
            })
            .collect();
        load(&[serialize(&converted)]).unwrap();
        let bytes = serialize(&converted);
        let mut w = Weights::from_safetensors(&[&bytes], &common::cpu()).unwrap();
        let key = "encoder.conv_in.weight";
        let shape: [usize; 4] = original[key].1.clone().try_into().unwrap();
        let got = w.take(key, shape).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let want: Vec<f32> = i2vgen::loading::weights::to_f32(Dtype::F32, &original[key].2, key)
            .unwrap()
            .into_iter()
            .map(round)
            .collect();
        assert_eq!(got, want, "{dtype:?}");
    }
}

#[test]
fn shards_load_like_one_file_and_a_duplicate_is_an_error() {
    let tensors = vae_tensors();
    let (first, second): (Tensors, Tensors) = tensors.into_iter().partition(|(k, _)| k.starts_with("encoder."));
    load(&[serialize(&first), serialize(&second)]).unwrap();
    let mut overlap = second.clone();
    let (k, v) = first.iter().next().unwrap();
    overlap.insert(k.clone(), v.clone());
    let err = load(&[serialize(&first), serialize(&overlap)]).unwrap_err().to_string();
    assert!(err.contains(k.as_str()), "{err}");
}

#[test]
fn weight_files_are_chosen_like_diffusers() {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        select_weight_files(&names(&["config.json", "diffusion_pytorch_model.safetensors"]), false).unwrap(),
        WeightFiles::Single("diffusion_pytorch_model.safetensors".into())
    );
    assert_eq!(
        select_weight_files(&names(&["model.fp16.safetensors", "model.safetensors"]), true).unwrap(),
        WeightFiles::Single("model.fp16.safetensors".into())
    );
    assert_eq!(
        select_weight_files(&names(&["diffusion_pytorch_model.safetensors.index.json", "a.safetensors"]), false)
            .unwrap(),
        WeightFiles::Index("diffusion_pytorch_model.safetensors.index.json".into())
    );
    assert!(select_weight_files(&names(&["config.json", "diffusion_pytorch_model.bin"]), false).is_err());
    let index = r#"{"metadata": {}, "weight_map": {"a": "s-00002.safetensors", "b": "s-00001.safetensors", "c": "s-00002.safetensors"}}"#;
    assert_eq!(index_shards(index, "index.json").unwrap(), vec!["s-00001.safetensors", "s-00002.safetensors"]);
}

/// With packed f16 on, the `Linear` and conv weights inserted are held as f16 pairs in u32 words
/// and taken as their f16-rounded values; norm weights, biases, embeddings and q8 tensors are
/// kept as they came. (The memory this saves is measured per process by `bench --pipeline`:
/// `cli::bench_pipeline_measures_each_stage_next_to_the_plan`.)
#[test]
fn packed_f16_weights_are_held_packed_and_taken_rounded() {
    let values = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0 - 0.5)
            .collect()
    };
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let rounded = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect::<Vec<f32>>();
    let (conv, linear, norm, embedding) = (values(8 * 3 * 9, 1), values(300 * 70, 2), values(8, 3), values(4 * 6, 4));
    for (backend, device) in common::devices() {
        let mut w = Weights::new(&device);
        w.set_packed_f16(true);
        w.insert("conv.weight", Dtype::F32, &[8, 3, 3, 3], &bytes(&conv)).unwrap();
        w.insert("proj.weight", Dtype::F32, &[300, 70], &bytes(&linear)).unwrap();
        w.insert("norm.weight", Dtype::F32, &[8], &bytes(&norm)).unwrap();
        w.insert("embeddings.position_embedding.weight", Dtype::F32, &[4, 6], &bytes(&embedding)).unwrap();
        w.insert("q.weight", Dtype::I8, &[2, 3], &[1, 255, 3, 4, 5, 250]).unwrap();
        w.insert("q.weight.q8_scale", Dtype::F32, &[2], &bytes(&[0.5, 2.0])).unwrap();
        let take = |w: &mut Weights, key: &str, shape: &[usize]| -> Vec<f32> {
            match *shape {
                [a] => w.take(key, [a]).unwrap().into_data(),
                [a, b] => w.take(key, [a, b]).unwrap().into_data(),
                [a, b, c, d] => w.take(key, [a, b, c, d]).unwrap().into_data(),
                _ => unreachable!(),
            }
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
        };
        assert_eq!(take(&mut w, "conv.weight", &[8, 3, 3, 3]), rounded(&conv), "[{backend}] conv");
        assert_eq!(take(&mut w, "proj.weight", &[300, 70]), rounded(&linear), "[{backend}] linear");
        assert_ne!(rounded(&linear), linear, "the values must not be f16 already");
        assert_eq!(take(&mut w, "norm.weight", &[8]), norm, "[{backend}] norm");
        assert_eq!(take(&mut w, "embeddings.position_embedding.weight", &[4, 6]), embedding, "[{backend}] embedding");
        assert_eq!(take(&mut w, "q.weight", &[2, 3]), [0.5, -0.5, 1.5, 8.0, 10.0, -12.0], "[{backend}] q8");
        w.finish().unwrap();
    }
}

/// A folder read with packed f16 on packs each `Linear` and conv weight as it is read, so a
/// process never holds a component's f32 weights all at once (`--dtype packed-f16` once peaked
/// at 7.56 GB loading the real UNet against 4.85 GB packed): taken, they come back f16-rounded;
/// read without it, as stored.
#[test]
fn a_folder_read_packed_holds_its_matrix_weights_packed() {
    let dir = Path::new(common::FIXTURES).join("tiny-i2vgen");
    for (backend, device) in common::devices() {
        let take = |packed: bool| -> Vec<f32> {
            let mut folder = Folder::new(common::Disk(dir.clone()), false).unwrap();
            folder.set_packed_f16(packed);
            let mut weights = folder.weights("unet", &device).unwrap();
            assert_eq!(weights.packed_f16(), packed);
            let conv_in = weights.take("conv_in.weight", [16, 8, 3, 3]).unwrap();
            conv_in.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
        };
        let (packed, stored) = (take(true), take(false));
        let rounded: Vec<f32> = stored.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        assert_ne!(rounded, stored, "the fixture's weights must not be f16 already");
        assert_eq!(packed, rounded, "[{backend}] conv_in.weight was not packed as it was read");
    }
}
