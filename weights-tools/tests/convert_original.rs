//! `weights-tools convert-original` on the tiny refiner UNet written in the original ModelScope /
//! VGen key layout by the fixture script (a bare `.pth` torch pickle and a full-checkpoint-style
//! `.safetensors`): the result is the diffusers folder's weights, tensor for tensor and byte for
//! byte; checkpoints that do not fit the config fail with a sentence naming the tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

fn convert_original(from: &Path, config: Option<&str>) -> (std::process::Output, PathBuf) {
    let name = from.file_name().unwrap().to_string_lossy();
    let out = std::env::temp_dir().join(format!("i2vgen-convert-original-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let mut command = Command::new(env!("CARGO_BIN_EXE_weights-tools"));
    command.args(["convert-original", "--from"]).arg(from).arg("--to").arg(&out);
    if let Some(config) = config {
        command.args(["--config", config]);
    }
    (command.output().expect("running weights-tools"), out)
}

/// Every tensor of a safetensors file: dtype, shape, bytes.
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, (format!("{:?}", view.dtype()), view.shape().to_vec(), view.data().to_vec())))
        .collect()
}

const TINY_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-vid2vid/unet/config.json");

#[test]
fn original_checkpoints_convert_to_the_diffusers_weights() {
    let expected = tensors(&Path::new(FIXTURES).join("tiny-vid2vid/unet/diffusion_pytorch_model.safetensors"));
    for file in ["unet.pth", "model.safetensors"] {
        let (run, out) =
            convert_original(&Path::new(FIXTURES).join("tiny-vid2vid-original").join(file), Some(TINY_CONFIG));
        assert!(run.status.success(), "{file}: {}", String::from_utf8_lossy(&run.stderr));
        let got = tensors(&out.join("diffusion_pytorch_model.safetensors"));
        assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{file}: key sets");
        for (key, want) in &expected {
            assert!(
                got[key] == *want,
                "{file}: `{key}` differs ({:?} {:?} vs {:?} {:?})",
                got[key].0,
                got[key].1,
                want.0,
                want.1
            );
        }
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["_class_name"], "UNet3DConditionModel");
        std::fs::remove_dir_all(&out).ok();
    }
}

#[test]
fn checkpoints_that_do_not_fit_are_refused_by_name() {
    let stderr = |run: &std::process::Output| {
        assert_eq!(run.status.code(), Some(1));
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    let original = Path::new(FIXTURES).join("tiny-vid2vid-original/model.safetensors");

    // The tiny checkpoint against the real-size default config: the first mismatch is named.
    let (run, _) = convert_original(&original, None);
    let message = stderr(&run);
    assert!(message.contains("does not match the UNet3DConditionModel of the config"), "{message}");
    assert!(
        message.contains("down_blocks.0.resnets.0.norm1.weight` has shape [16] but the config implies [320]"),
        "{message}"
    );

    // A tensor with no place in the layout, and one taken away.
    let bytes = std::fs::read(&original).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = file.tensors();
    let dropped = "model.diffusion_model.middle_block.2.proj_out.weight";
    views.retain(|(name, _)| name != dropped);
    let extra = [0u8; 8];
    views.push((
        "model.diffusion_model.label_emb.9.weight".into(),
        TensorView::new(safetensors::Dtype::F32, vec![2], &extra).unwrap(),
    ));
    let dir = std::env::temp_dir().join(format!("i2vgen-bad-original-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with_extra = dir.join("extra.safetensors");
    safetensors::serialize_to_file(views.clone(), None, &with_extra).unwrap();
    let message = stderr(&convert_original(&with_extra, Some(TINY_CONFIG)).0);
    assert!(message.contains("not part of an original UNetSD layout: label_emb.9.weight"), "{message}");

    views.pop();
    let missing = dir.join("missing.safetensors");
    safetensors::serialize_to_file(views, None, &missing).unwrap();
    let message = stderr(&convert_original(&missing, Some(TINY_CONFIG)).0);
    assert!(message.contains("mid_block.temp_attentions.0.proj_out.weight"), "{message}");

    // Not a checkpoint at all.
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let message = stderr(&convert_original(&junk, Some(TINY_CONFIG)).0);
    assert!(message.contains("is not a readable torch checkpoint"), "{message}");
    std::fs::remove_dir_all(&dir).ok();
}
