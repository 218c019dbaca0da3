//! Damaged and hostile model files are refused with a sentence, never a panic: random and
//! boundary values in every config type, damaged manifests, safetensors files, shard indexes and
//! tokenizer files, and random prompts through the tokenizer.
//! A config that passes validation builds its network (keys and shapes only, no memory).
//!
//! proptest runs each property for the case count beside it ([`CASES`], [`BUILD_CASES`]) and
//! turns a panic into a failure with the smallest input it finds; the counts keep the module at
//! a few seconds in a debug build.

use std::collections::BTreeMap;

use i2vgen::loading::config::{ConfigFile, parse};
use i2vgen::loading::folder::{Files, Folder, TensorSource};
use i2vgen::loading::manifest::Manifest;
use i2vgen::loading::weights::Weights;
use i2vgen::models::clip::{CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection};
use i2vgen::models::unet_3d_condition::{UNet3DConditionModel, UNet3DConditionModelConfig};
use i2vgen::models::unet_i2vgen_xl::{I2VGenXLUNet, I2VGenXLUNetConfig};
use i2vgen::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use i2vgen::pipelines::pipeline_i2vgen_xl::CLIPImageProcessorConfig;
use i2vgen::schedulers::{SCHEDULER_CLASSES, SchedulerConfig};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use safetensors::Dtype;
use serde_json::{Value, json};

use crate::common::{FIXTURES, cpu};

/// Damaged variants tried per config type, manifest, index and safetensors file.
const CASES: u32 = 1024;
/// Small random configs tried per network type (each valid one is built).
const BUILD_CASES: u32 = 256;
/// Damaged variants tried per tokenizer file: each is read and, when accepted, tokenizes six
/// prompts (about 3 ms of CPU in a debug build).
const TOKENIZER_CASES: u32 = 256;

fn runner(cases: u32) -> TestRunner {
    // No regression files: a failure prints its smallest input, which the fix's test keeps.
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// An error must say something.
fn check_err<T>(what: &str, result: i2vgen::Result<T>) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) => {
            prop_assert!(!err.to_string().trim().is_empty(), "{what}: an error without a message");
            Ok(None)
        }
    }
}

/// What a damaged or hostile file may hold where a number, string or list belongs.
fn hostile_value() -> BoxedStrategy<Value> {
    let scalar = prop_oneof![
        select(vec![
            json!(0),
            json!(1),
            json!(2),
            json!(3),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1u64 << 32),
            json!(1u64 << 40),
            json!(0.5),
            json!(-0.0),
            json!(1e300),
            json!(-1e300),
            json!(1e-300),
            json!(""),
            json!("x"),
            json!("../../etc/hostname"),
            json!(null),
            json!(true),
            json!({}),
            json!({"height": 0, "width": 1u64 << 40}),
        ]),
        any::<i64>().prop_map(|v| json!(v)),
        (-1e6f64..1e6).prop_map(|v| json!(v)),
        (0u64..100).prop_map(|v| json!(v)),
    ]
    .boxed();
    prop_oneof![4 => scalar.clone(), 1 => prop::collection::vec(scalar, 0..5).prop_map(Value::Array)].boxed()
}

/// A step from a JSON value to one inside it.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every path to a value inside `value` (the root excluded).
fn paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    let children: Vec<(Step, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (Step::Index(i), v)).collect(),
        _ => return,
    };
    for (step, child) in children {
        prefix.push(step);
        out.push(prefix.clone());
        paths(child, prefix, out);
        prefix.pop();
    }
}

fn at_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// `base` with one to three edits: a value replaced by a hostile one, a key or list entry
/// removed, a hostile entry appended to a list, or a new key (one of `keys`) set.
fn damaged(base: Value, keys: Vec<String>) -> BoxedStrategy<Value> {
    let mut all = Vec::new();
    paths(&base, &mut Vec::new(), &mut all);
    all.extend(keys.into_iter().map(|k| vec![Step::Key(k)]));
    let edit = (select(all), 0u8..4, hostile_value());
    prop::collection::vec(edit, 1..4)
        .prop_map(move |edits| {
            let mut json = base.clone();
            for (path, how, value) in edits {
                let (last, parent) = path.split_last().expect("paths are not empty");
                let Some(parent) = at_mut(&mut json, parent) else { continue };
                match (how, parent, last) {
                    (0, Value::Object(map), Step::Key(k)) => drop(map.remove(k)),
                    (0, Value::Array(items), Step::Index(i)) if *i < items.len() => drop(items.remove(*i)),
                    (1, parent, step) => {
                        if let Some(Value::Array(items)) = at_mut(parent, std::slice::from_ref(step)) {
                            items.push(value);
                        }
                    }
                    (_, Value::Object(map), Step::Key(k)) => drop(map.insert(k.clone(), value)),
                    (_, Value::Array(items), Step::Index(i)) if *i < items.len() => items[*i] = value,
                    _ => {}
                }
            }
            json
        })
        .boxed()
}

/// Text that is not the JSON it should be: cut short, or bytes flipped.
fn garbled(text: String) -> BoxedStrategy<String> {
    let len = text.len();
    prop_oneof![
        (0..len).prop_map({
            let text = text.clone();
            move |cut| String::from_utf8_lossy(&text.as_bytes()[..cut]).into_owned()
        }),
        prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map(move |flips| {
            let mut bytes = text.clone().into_bytes();
            for (i, b) in flips {
                bytes[i] ^= b;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }),
    ]
    .boxed()
}

fn fixture_json(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Damaged variants of a valid config `base` are parsed: an `Err` with a message, or a config
/// that `build` (the network, keys and shapes only, or the scheduler) handles without a panic.
fn fuzz_config<T: ConfigFile>(base: Value, build: impl Fn(&T) -> Result<(), TestCaseError>) {
    let config = parse::<T>(&base.to_string()).unwrap_or_else(|e| panic!("the base {} must parse: {e}", T::FILE));
    // The keys the struct reads, also where the base leaves them to their defaults.
    let keys = match serde_json::to_value(&config.config).unwrap() {
        Value::Object(map) => map.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    };
    let text = base.to_string();
    let inputs = prop_oneof![
        4 => damaged(base, keys).prop_map(|json| json.to_string()),
        1 => garbled(text),
    ];
    runner(CASES)
        .run(&inputs, |text| {
            if let Some(parsed) = check_err(T::FILE, parse::<T>(&text))? {
                build(&parsed.config)?;
            }
            Ok(())
        })
        .unwrap();
}

/// The network of a config, keys and shapes only: `Ok`, or an error with a message.
fn record<C, N>(load: fn(&mut Weights, &C) -> i2vgen::Result<N>) -> impl Fn(&C) -> Result<(), TestCaseError> {
    move |config| {
        let mut weights = Weights::shapes(&cpu());
        check_err("the network", load(&mut weights, config))?;
        Ok(())
    }
}

/// A scheduler of a config, for a few step counts, stepped to the end on one-value samples.
fn run_scheduler(config: &SchedulerConfig) -> Result<(), TestCaseError> {
    for steps in [1, 3, 25] {
        let Some(mut scheduler) = check_err("the scheduler", config.build::<Vec<f64>>(steps))? else { continue };
        for t in scheduler.timesteps().to_vec() {
            check_err("a step", scheduler.step(vec![0.1], t, vec![1.0]))?;
        }
        let Some(mut again) = check_err("the scheduler", config.build::<Vec<f64>>(steps))? else { continue };
        for strength in [-1.0, 0.0, 0.5, 1.0, 2.0] {
            again.begin_at_strength(strength);
        }
    }
    Ok(())
}

#[test]
fn fuzz_unet_configs() {
    fuzz_config::<I2VGenXLUNetConfig>(fixture_json("tiny-i2vgen/unet/config.json"), record(I2VGenXLUNet::load));
    fuzz_config::<UNet3DConditionModelConfig>(
        fixture_json("tiny-vid2vid/unet/config.json"),
        record(UNet3DConditionModel::load),
    );
}

#[test]
fn fuzz_vae_and_clip_configs() {
    fuzz_config::<AutoencoderKLConfig>(fixture_json("tiny-i2vgen/vae/config.json"), record(AutoencoderKL::load));
    fuzz_config::<CLIPTextConfig>(fixture_json("tiny-i2vgen/text_encoder/config.json"), record(CLIPTextModel::load));
    fuzz_config::<CLIPVisionConfig>(
        fixture_json("tiny-i2vgen/image_encoder/config.json"),
        record(CLIPVisionModelWithProjection::load),
    );
    fuzz_config::<CLIPImageProcessorConfig>(
        fixture_json("tiny-i2vgen/feature_extractor/preprocessor_config.json"),
        |_| Ok(()),
    );
}

#[test]
fn fuzz_scheduler_configs() {
    let ddim = fixture_json("tiny-i2vgen/scheduler/scheduler_config.json");
    let parsed = parse::<SchedulerConfig>(&ddim.to_string()).unwrap().config;
    for class in SCHEDULER_CLASSES {
        let base = serde_json::to_value(parsed.with_class(class).unwrap()).unwrap();
        fuzz_config::<SchedulerConfig>(base, run_scheduler);
    }
}

/// Mostly a `good` value, sometimes a `bad` one: small random configs pass validation often
/// enough to be built, and fail it in every way.
fn mostly<T: Clone + std::fmt::Debug + 'static>(good: Vec<T>, bad: Vec<T>) -> BoxedStrategy<T> {
    prop_oneof![4 => select(good), 1 => select(bad)].boxed()
}

/// Small random UNet configs (zeros, wrong divisors and mismatched lists included): whatever
/// validation accepts builds.
#[test]
fn small_valid_unet_configs_build() {
    let config = mostly(vec![1usize, 2, 3], vec![0, 9]).prop_flat_map(|n| {
        let lists = |names: [&'static str; 2]| {
            mostly(vec![n], vec![0, n + 1]).prop_flat_map(move |len| prop::collection::vec(select(names.to_vec()), len))
        };
        (
            prop::collection::vec(mostly(vec![8usize, 16, 32], vec![0, 12]), n),
            lists(["CrossAttnDownBlock3D", "DownBlock3D"]),
            lists(["CrossAttnUpBlock3D", "UpBlock3D"]),
            (
                mostly(vec![1usize, 2], vec![0]),
                mostly(vec![1usize, 2, 4, 8], vec![0, 3]),
                mostly(vec![1usize, 4, 8], vec![0, 5]),
            ),
            (mostly(vec![1usize, 4], vec![0]), mostly(vec![1usize, 4], vec![0]), mostly(vec![8usize, 32], vec![0])),
            any::<bool>(),
        )
    });
    let built = std::cell::Cell::new(0);
    runner(BUILD_CASES)
        .run(&config, |(widths, down, up, (layers, groups, head), (cin, cout, cross), refiner)| {
            let json = json!({
                "_class_name": if refiner { "UNet3DConditionModel" } else { "I2VGenXLUNet" },
                "block_out_channels": widths,
                "down_block_types": down,
                "up_block_types": up,
                "layers_per_block": layers,
                "norm_num_groups": groups,
                "attention_head_dim": head,
                "in_channels": cin,
                "out_channels": cout,
                "cross_attention_dim": cross,
            })
            .to_string();
            let mut weights = Weights::shapes(&cpu());
            if refiner {
                if let Some(parsed) = check_err("config", parse::<UNet3DConditionModelConfig>(&json))? {
                    let result = UNet3DConditionModel::load(&mut weights, &parsed.config);
                    prop_assert!(result.is_ok(), "{json}: {}", result.err().unwrap());
                    built.set(built.get() + 1);
                }
            } else if let Some(parsed) = check_err("config", parse::<I2VGenXLUNetConfig>(&json))? {
                let result = I2VGenXLUNet::load(&mut weights, &parsed.config);
                prop_assert!(result.is_ok(), "{json}: {}", result.err().unwrap());
                built.set(built.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    println!("{} of {BUILD_CASES} random UNet configs were valid and built", built.get());
    assert!(built.get() > 0, "no random UNet config was valid");
}

/// Small random VAE and CLIP configs: whatever validation accepts builds.
#[test]
fn small_valid_vae_and_clip_configs_build() {
    let vae = mostly(vec![1usize, 2, 3], vec![0, 9]).prop_flat_map(|n| {
        (
            prop::collection::vec(mostly(vec![4usize, 8], vec![0, 6]), n),
            (
                mostly(vec![1usize, 2], vec![0]),
                mostly(vec![1usize, 2, 4], vec![0, 3]),
                mostly(vec![1usize, 4], vec![0]),
            ),
            (mostly(vec![3usize], vec![0, 1]), mostly(vec![0.18f64], vec![-1.0, 0.0])),
        )
    });
    let built = std::cell::Cell::new(0);
    runner(BUILD_CASES)
        .run(&vae, |(widths, (layers, groups, latent), (channels, scaling))| {
            let n = widths.len();
            let json = json!({
                "_class_name": "AutoencoderKL",
                "block_out_channels": widths,
                "down_block_types": vec!["DownEncoderBlock2D"; n],
                "up_block_types": vec!["UpDecoderBlock2D"; n],
                "layers_per_block": layers,
                "norm_num_groups": groups,
                "latent_channels": latent,
                "in_channels": channels,
                "scaling_factor": scaling,
            })
            .to_string();
            if let Some(parsed) = check_err("config", parse::<AutoencoderKLConfig>(&json))? {
                let result = AutoencoderKL::load(&mut Weights::shapes(&cpu()), &parsed.config);
                prop_assert!(result.is_ok(), "{json}: {}", result.err().unwrap());
                built.set(built.get() + 1);
            }
            Ok(())
        })
        .unwrap();

    let clip = (
        (
            mostly(vec![8usize, 12], vec![0]),
            mostly(vec![16usize], vec![0]),
            mostly(vec![1usize, 2], vec![0]),
            mostly(vec![1usize, 4], vec![0, 5]),
        ),
        (mostly(vec![1usize, 50], vec![0]), mostly(vec![1usize, 8], vec![0])),
        (mostly(vec![3usize], vec![0, 1]), mostly(vec![8usize, 12], vec![0]), mostly(vec![1usize, 4, 8], vec![0, 16])),
        mostly(vec![1e-5f64], vec![0.0, -1.0]),
    );
    runner(BUILD_CASES)
        .run(&clip, |((hidden, inter, layers, heads), (vocab, positions), (channels, image, patch), eps)| {
            let shared = json!({
                "hidden_size": hidden,
                "intermediate_size": inter,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "layer_norm_eps": eps,
            });
            let with = |extra: Value| {
                let mut json = shared.clone();
                json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
                json.to_string()
            };
            let text = with(
                json!({"model_type": "clip_text_model", "vocab_size": vocab, "max_position_embeddings": positions}),
            );
            if let Some(parsed) = check_err("config", parse::<CLIPTextConfig>(&text))? {
                let result = CLIPTextModel::load(&mut Weights::shapes(&cpu()), &parsed.config);
                prop_assert!(result.is_ok(), "{text}: {}", result.err().unwrap());
                built.set(built.get() + 1);
            }
            let vision = with(json!({
                "model_type": "clip_vision_model",
                "num_channels": channels,
                "image_size": image,
                "patch_size": patch,
                "projection_dim": 8,
            }));
            if let Some(parsed) = check_err("config", parse::<CLIPVisionConfig>(&vision))? {
                let result = CLIPVisionModelWithProjection::load(&mut Weights::shapes(&cpu()), &parsed.config);
                prop_assert!(result.is_ok(), "{vision}: {}", result.err().unwrap());
                built.set(built.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    println!("{} of {} random VAE and CLIP configs were valid and built", built.get(), 3 * BUILD_CASES);
    assert!(built.get() > 0, "no random VAE or CLIP config was valid");
}

/// A model folder in memory.
#[derive(Clone, Default)]
struct Memory(BTreeMap<String, Vec<u8>>);

impl Files for Memory {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.0.get(path).cloned())
    }

    fn list(&self, dir: &str) -> std::io::Result<Option<Vec<String>>> {
        let names: Vec<String> = self
            .0
            .keys()
            .filter_map(|path| path.strip_prefix(dir)?.strip_prefix('/').map(str::to_string))
            .filter(|name| !name.contains('/'))
            .collect();
        Ok((!names.is_empty()).then_some(names))
    }
}

/// A safetensors file of `tensors` (name, dtype, shape; values are a byte pattern).
fn safetensors_file(tensors: &[(&str, Dtype, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dtype, shape)| {
            let bytes = shape.iter().product::<usize>() * dtype.bitsize() / 8;
            (0..bytes).map(|i| (i * 37 % 251) as u8).collect()
        })
        .collect();
    let views = tensors.iter().zip(&data).map(|((name, dtype, shape), bytes)| {
        (name.to_string(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap())
    });
    safetensors::serialize(views, None).unwrap()
}

/// Whatever a component folder yields, as `Ok` or an error with a message.
fn load_weights(files: Memory, component: &str) -> Result<(), TestCaseError> {
    if let Some(mut folder) = check_err("the folder", Folder::new(files, false))?
        && let Some(weights) = check_err("the weights", folder.weights(component, &cpu()))?
    {
        check_err("finish", weights.finish())?;
    }
    Ok(())
}

/// Damaged safetensors files: headers and bodies cut, bit-flipped, or with a damaged header
/// JSON (offsets, shapes and dtypes of any value), and raw bytes given to the streamed loader.
#[test]
fn fuzz_safetensors_files() {
    let file = safetensors_file(&[
        ("a.weight", Dtype::F32, vec![2, 3]),
        ("b.bias", Dtype::F16, vec![3]),
        ("c.weight", Dtype::BF16, vec![1, 2, 2]),
        ("d.weight", Dtype::I8, vec![4]),
        ("e.count", Dtype::I64, vec![1]),
    ]);
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let body = file[8 + header_len..].to_vec();
    let rebuilt = damaged(header, Vec::new()).prop_flat_map(move |header| {
        let header = header.to_string().into_bytes();
        let body = body.clone();
        // The stated header length: right, or off by a little or a lot.
        select(vec![0i64, -1, 1, 1 << 40]).prop_map(move |skew| {
            let stated = (header.len() as i64).wrapping_add(skew) as u64;
            [stated.to_le_bytes().as_slice(), &header, &body].concat()
        })
    });
    let len = file.len();
    let bytes = prop_oneof![
        (0..len).prop_map({
            let file = file.clone();
            move |cut| file[..cut].to_vec()
        }),
        prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map({
            let file = file.clone();
            move |flips| {
                let mut bytes = file.clone();
                for (i, b) in flips {
                    bytes[i] ^= b;
                }
                bytes
            }
        }),
        rebuilt,
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    runner(CASES)
        .run(&bytes, |bytes| {
            let mut weights = Weights::new(&cpu());
            check_err("insert_file", weights.insert_file("vae/model.safetensors", &bytes))?;
            let files = Memory([("vae/model.safetensors".to_string(), bytes)].into());
            load_weights(files, "vae")
        })
        .unwrap();

    // One tensor handed in by the browser: any dtype, shape and length, sizes that overflow.
    let dims = select(vec![0usize, 1, 2, 3, 1 << 16, 1 << 31, 1 << 32, usize::MAX]);
    let dtypes = select(vec![Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I8, Dtype::F64, Dtype::BOOL]);
    let tensor = (dtypes, prop::collection::vec(dims, 0..5), prop::collection::vec(any::<u8>(), 0..40));
    runner(CASES)
        .run(&tensor, |(dtype, shape, bytes)| {
            check_err("insert", Weights::new(&cpu()).insert("x", dtype, &shape, &bytes))?;
            Ok(())
        })
        .unwrap();
}

/// A converted folder: `manifest.json` naming two shards of the `vae` component's tensors.
fn converted_folder() -> (Value, Memory) {
    let shards = [
        safetensors_file(&[("vae/a.weight", Dtype::F32, vec![2, 3]), ("vae/b.bias", Dtype::F16, vec![3])]),
        safetensors_file(&[("vae/c.weight", Dtype::I8, vec![4, 2])]),
    ];
    let mut files = Memory::default();
    let mut shard_entries = Vec::new();
    let mut tensors = Vec::new();
    for (i, bytes) in shards.iter().enumerate() {
        let path = format!("shard-{i:05}.safetensors");
        let (header, metadata) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
        for (name, info) in metadata.tensors() {
            let (begin, end) = info.data_offsets;
            tensors.push(json!({
                "key": name.strip_prefix("vae/").unwrap(),
                "dtype": format!("{:?}", info.dtype),
                "shape": info.shape,
                "shard": i,
                "begin": 8 + header + begin,
                "end": 8 + header + end,
            }));
        }
        shard_entries.push(json!({"path": path, "bytes": bytes.len(), "sha256": "0".repeat(64)}));
        files.0.insert(path, bytes.clone());
    }
    files.0.insert("vae/config.json".into(), b"{}".to_vec());
    let manifest = json!({
        "format": "i2vgen-weights",
        "version": 1,
        "dtype": "f32",
        "files": [{"path": "vae/config.json", "bytes": 2, "sha256": "a".repeat(64)}],
        "shards": shard_entries,
        "components": {"vae": tensors},
    });
    (manifest, files)
}

/// Damaged manifests (shard indexes out of range, paths out of the folder, byte ranges and
/// shapes of any value, fields of the wrong type) and cut or bit-flipped manifest text.
#[test]
fn fuzz_manifests() {
    let (manifest, files) = converted_folder();
    let parsed = Manifest::parse(&manifest.to_string()).unwrap();
    assert_eq!(parsed.shards_of("vae").unwrap(), [0, 1]);
    let mut good = files.clone();
    good.0.insert("manifest.json".into(), manifest.to_string().into_bytes());
    load_weights(good, "vae").unwrap();

    let text = manifest.to_string();
    let inputs = prop_oneof![4 => damaged(manifest, Vec::new()).prop_map(|json| json.to_string()), 1 => garbled(text)];
    runner(CASES)
        .run(&inputs, |text| {
            if let Some(manifest) = check_err("manifest", Manifest::parse(&text))? {
                for component in manifest.components.keys() {
                    check_err("shards_of", manifest.shards_of(component))?;
                }
            }
            let mut files = files.clone();
            files.0.insert("manifest.json".into(), text.into_bytes());
            load_weights(files, "vae")
        })
        .unwrap();

    // The cases the research reproduced: each is refused with a sentence naming the manifest.
    let (manifest, _) = converted_folder();
    for (path, value) in [
        ("/components/vae/0/shard", json!(7)),
        ("/shards/0/path", json!("../../etc/hostname")),
        ("/files/0/path", json!("/etc/hostname")),
        ("/components/vae/0/end", json!(1u64 << 40)),
        ("/components/vae/0/shape", json!([1u64 << 32, 1u64 << 32])),
        ("/shards/1/sha256", json!("not a hash")),
    ] {
        let mut bad = manifest.clone();
        *bad.pointer_mut(path).unwrap() = value;
        let err = Manifest::parse(&bad.to_string()).map(|_| ()).unwrap_err().to_string();
        assert!(err.starts_with("manifest.json: ") && err.contains("damaged"), "{path}: {err}");
    }
}

/// A sharded component (`*.safetensors.index.json`): damaged weight maps, an empty one, shards
/// that are missing or outside the folder.
#[test]
fn fuzz_shard_indexes() {
    let mut files = Memory::default();
    let shard = |i| format!("diffusion_pytorch_model-0000{i}-of-00002.safetensors");
    files.0.insert(format!("vae/{}", shard(1)), safetensors_file(&[("a.weight", Dtype::F32, vec![2, 2])]));
    files.0.insert(format!("vae/{}", shard(2)), safetensors_file(&[("b.bias", Dtype::F16, vec![2])]));
    let index = json!({"metadata": {"total_size": 12}, "weight_map": {"a.weight": shard(1), "b.bias": shard(2)}});
    let path = "vae/diffusion_pytorch_model.safetensors.index.json";
    let with_index = |index: String| {
        let mut files = files.clone();
        files.0.insert(path.into(), index.into_bytes());
        files
    };
    load_weights(with_index(index.to_string()), "vae").unwrap();

    let text = index.to_string();
    let inputs = prop_oneof![4 => damaged(index, Vec::new()).prop_map(|json| json.to_string()), 1 => garbled(text)];
    runner(CASES).run(&inputs, |index| load_weights(with_index(index), "vae")).unwrap();

    for (weight_map, expected) in [
        (json!({}), "empty weight_map"),
        (json!({"a.weight": "missing.safetensors"}), "vae/missing.safetensors"),
        (json!({"a.weight": "../unet/x.safetensors"}), "outside its folder"),
        (json!({"a.weight": 3}), "not a safetensors index"),
    ] {
        let mut folder = Folder::new(with_index(json!({"weight_map": weight_map}).to_string()), false).unwrap();
        let err = folder.weights("vae", &cpu()).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(expected), "{weight_map}: {err}");
    }
}

/// The panics the research reproduced, each now a sentence naming the file and the key.
#[test]
fn config_values_that_panicked_are_refused_by_name() {
    fn refused<T: ConfigFile>(path: &str, edit: Value, key: &str) {
        let mut json = fixture_json(path);
        json.as_object_mut().unwrap().extend(edit.as_object().unwrap().clone());
        let err = parse::<T>(&json.to_string()).map(|_| ()).unwrap_err().to_string();
        assert!(err.starts_with(T::FILE) && err.contains(&format!("`{key}`")), "{edit}: {err}");
    }
    // vae.rs:200 (empty blocks), nn.rs:120 (groups 0).
    refused::<AutoencoderKLConfig>(
        "tiny-i2vgen/vae/config.json",
        json!({"block_out_channels": [], "down_block_types": [], "up_block_types": []}),
        "block_out_channels",
    );
    refused::<AutoencoderKLConfig>("tiny-i2vgen/vae/config.json", json!({"norm_num_groups": 0}), "norm_num_groups");
    // unet_3d.rs:84 (a remainder by zero).
    refused::<I2VGenXLUNetConfig>(
        "tiny-i2vgen/unet/config.json",
        json!({"attention_head_dim": 0}),
        "attention_head_dim",
    );
    refused::<I2VGenXLUNetConfig>("tiny-i2vgen/unet/config.json", json!({"norm_num_groups": 0}), "norm_num_groups");
    refused::<UNet3DConditionModelConfig>(
        "tiny-vid2vid/unet/config.json",
        json!({"layers_per_block": 1u64 << 40}),
        "layers_per_block",
    );
    // clip.rs:250 (a division by zero).
    refused::<CLIPVisionConfig>("tiny-i2vgen/image_encoder/config.json", json!({"patch_size": 0}), "patch_size");
    refused::<CLIPTextConfig>(
        "tiny-i2vgen/text_encoder/config.json",
        json!({"num_attention_heads": 0}),
        "num_attention_heads",
    );
    // pipeline_i2vgen_xl.rs:342 (`chunks_mut(0)`) and a 120 GB crop.
    let processor = "tiny-i2vgen/feature_extractor/preprocessor_config.json";
    refused::<CLIPImageProcessorConfig>(processor, json!({"crop_size": 0}), "crop_size width");
    refused::<CLIPImageProcessorConfig>(processor, json!({"crop_size": 200_000}), "crop_size width");
    // A 4 TB schedule, and a steps_offset that overflowed the timesteps.
    let scheduler = "tiny-i2vgen/scheduler/scheduler_config.json";
    refused::<SchedulerConfig>(scheduler, json!({"num_train_timesteps": 1_000_000_000_000u64}), "num_train_timesteps");
    refused::<SchedulerConfig>(scheduler, json!({"steps_offset": u64::MAX}), "steps_offset");
    refused::<SchedulerConfig>(scheduler, json!({"beta_end": 1.5}), "beta_end");
}

/// The fixture's CLIP tokenizer files, cut to a small vocabulary so each damaged variant parses in
/// about a millisecond: the 512 byte-level symbols (with and without `</w>`), the first 300 merges and
/// what they make, and the special tokens. Returns (vocab, merges lines, tokenizer_config,
/// special_tokens_map).
fn small_tokenizer_files() -> (Value, Vec<String>, Value, Value) {
    let dir = format!("{FIXTURES}/tiny-i2vgen/tokenizer");
    let vocab: BTreeMap<String, u64> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/vocab.json")).unwrap()).unwrap();
    let merges: Vec<String> =
        std::fs::read_to_string(format!("{dir}/merges.txt")).unwrap().lines().take(301).map(String::from).collect();
    let mut kept: Vec<String> = vec!["<|startoftext|>".into(), "<|endoftext|>".into()];
    for line in &merges[1..] {
        let (left, right) = line.split_once(' ').unwrap();
        kept.extend([left.to_string(), right.to_string(), format!("{left}{right}")]);
    }
    let small: serde_json::Map<String, Value> = vocab
        .into_iter()
        .filter(|(token, id)| *id < 512 || kept.contains(token))
        .map(|(token, id)| (token, json!(id)))
        .collect();
    let special = |content: &str| json!({"content": content, "normalized": true, "special": true});
    let config = json!({
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",
        "added_tokens_decoder": {"49406": special("<|startoftext|>"), "49407": special("<|endoftext|>")},
    });
    let map = json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"});
    (Value::Object(small), merges, config, map)
}

/// Prompts that reach every stage of the tokenizer: special tokens whole and cut, case folding
/// that changes length (`İ`), NFC, unicode spaces, bytes outside the vocabulary.
const TRICKY_PROMPTS: [&str; 6] = [
    "a photo of a cat",
    "<|startoftext|>x<|endoftext|><|ENDOFTEXT|><|endof",
    "İSTANBUL ΣΊΣΥΦΟΣ straße ﬀ",
    "e\u{301}\u{301}\u{200b}\u{3000}\t\n 日本語 🦀🦀",
    "",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// A tokenizer read from `tokenizer/` files through the library's folder reader: an error with a
/// message, or one whose every encoding is `model_max_length` ids framed by bos and eos.
fn tokenizer_from(files: Vec<(&str, Vec<u8>)>) -> Result<(), TestCaseError> {
    let files = Memory(files.into_iter().map(|(name, bytes)| (format!("tokenizer/{name}"), bytes)).collect());
    let Some(mut folder) = check_err("the folder", Folder::new(files, false))? else { return Ok(()) };
    if let Some(tokenizer) = check_err("the tokenizer", i2vgen::loading::folder::tokenizer(&mut folder))? {
        for prompt in TRICKY_PROMPTS {
            let ids = tokenizer.encode(prompt);
            prop_assert_eq!(ids.len(), tokenizer.model_max_length());
            prop_assert_eq!(ids[0], tokenizer.bos_token_id());
            prop_assert!(ids.contains(&tokenizer.eos_token_id()));
            prop_assert!(ids.iter().all(|&id| id <= tokenizer.max_token_id()));
        }
    }
    Ok(())
}

/// Text that is not the file it should be: random bytes (often not UTF-8) or the file garbled.
fn damaged_file(text: String) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => garbled(text).prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
    .boxed()
}

/// Damaged tokenizer files, one at a time (the others intact): vocab.json, merges.txt,
/// tokenizer_config.json and special_tokens_map.json with values, entries and lines of any kind,
/// cut or bit-flipped, or random bytes. Each is refused with a sentence or tokenizes without a
/// panic.
#[test]
fn fuzz_tokenizer_files() {
    let (vocab, merges, config, map) = small_tokenizer_files();
    let texts = [vocab.to_string(), merges.join("\n"), config.to_string(), map.to_string()];
    let names = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"];
    let with = |i: usize, bytes: Vec<u8>| {
        let mut files: Vec<(&str, Vec<u8>)> =
            names.iter().zip(&texts).map(|(n, t)| (*n, t.clone().into_bytes())).collect();
        files[i].1 = bytes;
        files
    };
    tokenizer_from(with(0, texts[0].clone().into_bytes())).unwrap();

    let json_keys = |i: usize| -> Vec<String> {
        let special = ["bos_token", "eos_token", "unk_token", "pad_token"].map(String::from).to_vec();
        if i == 2 {
            [special, vec!["model_max_length".into(), "added_tokens_decoder".into()]].concat()
        } else {
            special
        }
    };
    for (i, base) in [(0, &vocab), (2, &config), (3, &map)] {
        let inputs = prop_oneof![
            4 => damaged(base.clone(), json_keys(i)).prop_map(|json| json.to_string().into_bytes()),
            1 => damaged_file(texts[i].clone()),
        ];
        runner(TOKENIZER_CASES).run(&inputs, |bytes| tokenizer_from(with(i, bytes))).unwrap();
    }

    // merges.txt: lines replaced, removed or added, with pairs and lines of any shape.
    let line = prop_oneof![
        select(merges[1..].to_vec()),
        select(
            ["", " ", "a", "a b c", "a  b", "#version: 0.2", "zz qq", "\u{0} \u{0}", "<|endoftext|> a", "i n"]
                .map(String::from)
                .to_vec()
        ),
        prop::collection::vec(any::<char>(), 0..6).prop_map(|c| c.into_iter().collect::<String>()),
    ];
    let edit = (0..merges.len(), 0u8..3, line);
    let edited = prop::collection::vec(edit, 1..4).prop_map({
        let merges = merges.clone();
        move |edits| {
            let mut lines = merges.clone();
            for (at, how, line) in edits {
                let at = at.min(lines.len());
                match how {
                    0 if at < lines.len() => drop(lines.remove(at)),
                    1 => lines.insert(at, line),
                    _ if at < lines.len() => lines[at] = line,
                    _ => lines.push(line),
                }
            }
            lines.join("\n").into_bytes()
        }
    });
    let inputs = prop_oneof![4 => edited, 1 => damaged_file(texts[1].clone())];
    runner(TOKENIZER_CASES).run(&inputs, |bytes| tokenizer_from(with(1, bytes))).unwrap();
}

/// Random unicode text up to 2,000 characters (the prompt cap) through the real CLIP tokenizer:
/// always `model_max_length` ids framed by bos and eos, never a panic, in bounded time.
#[test]
fn fuzz_tokenizer_prompts() {
    let mut fixture = crate::common::open_fixture("tiny-i2vgen");
    let tokenizer = i2vgen::loading::folder::tokenizer(fixture.as_mut()).unwrap();
    let pieces: Vec<String> = [
        "<|startoftext|>",
        "<|endoftext|>",
        "<|",
        "|>",
        " ",
        "\u{3000}",
        "\u{301}",
        "İ",
        "Σ",
        "ﬀ",
        "日本",
        "🦀",
        "'s",
        "'LL",
        "a",
        "ab",
        "1",
        ",",
        "\u{0}",
    ]
    .map(String::from)
    .to_vec();
    let text = prop_oneof![
        prop::collection::vec(any::<char>(), 0..2_000).prop_map(|c| c.into_iter().collect::<String>()),
        prop::collection::vec(select(pieces), 0..700).prop_map(|p| p.concat()),
    ];
    let start = std::time::Instant::now();
    runner(CASES / 2)
        .run(&text, |text| {
            let text: String = text.chars().take(i2vgen::loading::tokenizer::MAX_PROMPT_CHARS).collect();
            let ids = tokenizer.encode(&text);
            prop_assert_eq!(ids.len(), tokenizer.model_max_length());
            prop_assert_eq!(ids[0], tokenizer.bos_token_id());
            prop_assert!(ids.contains(&tokenizer.eos_token_id()));
            Ok(())
        })
        .unwrap();
    println!("{} random prompts tokenized in {:?}", CASES / 2, start.elapsed());
}
