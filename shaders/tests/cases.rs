//! The kernel-vs-twin case list (`i2vgen_shaders::cases`, the one the browser runs through
//! `i2vgen-web`'s `kernel_cases`) on native wgpu (Mesa llvmpipe on the CI machine): every case
//! within the tolerance, its kernel among the launches, and every family covered.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use i2vgen_shaders::cases::{FAMILIES, TOLERANCE, cases, relative_error};

fn values(t: Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

#[test]
fn every_case_on_wgpu() {
    let device = Device::wgpu_options()
        .init()
        .unwrap_or_else(|err| panic!("no wgpu adapter ({err}); install mesa-vulkan-drivers for llvmpipe"));
    let mut worst: BTreeMap<&str, f32> = BTreeMap::new();
    let mut failures = Vec::new();
    let list = cases();
    for case in &list {
        let out = case.run(&device);
        let err = relative_error(&values(out.kernel), &values(out.twin));
        let ran = case.kernel_ran(&out.launches);
        println!(
            "{:<14} {:<80} {:?} relative {err:.2e} launches {:?}",
            case.family, case.name, out.shape, out.launches
        );
        let w = worst.entry(case.family).or_default();
        *w = w.max(err);
        if err.is_nan() || err > TOLERANCE || !ran {
            failures.push(format!("{}: relative error {err:e}, kernel {} launched: {ran}", case.name, case.kernel));
        }
    }
    println!("worst per family: {worst:?}");
    assert!(failures.is_empty(), "{failures:#?}");
    for family in FAMILIES {
        assert!(worst.contains_key(family), "no case for {family}");
    }
    let mut names: Vec<_> = list.iter().map(|c| &c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), list.len(), "case names are not unique");
}

/// The host f16 rounding the packing case is checked against equals `half`'s, on awkward values.
#[test]
fn host_f16_rounding_matches_half() {
    let mut v = vec![
        0.0f32,
        -0.0,
        1.0,
        65504.0,
        65519.0,
        65520.0,
        -65520.0,
        1e-40,
        2f32.powi(-14),
        2f32.powi(-14) * 0.999,
        2f32.powi(-24),
        2f32.powi(-25),
        2f32.powi(-25) * 1.0001,
        3.0 * 2f32.powi(-25),
        5.0 * 2f32.powi(-26),
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        2047.5,
        2049.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    v.extend((0..8).map(|k| k as f32 * 2f32.powi(-24) + 2f32.powi(-25)));
    v.extend(
        (0..20_000)
            .map(|i| (i as f32 * 0.618_034).fract() * 2f32.powi(i % 50 - 30) * if i % 3 == 0 { -1.0 } else { 1.0 }),
    );
    for x in v {
        let want = half::f16::from_f32(x).to_f32();
        let got = i2vgen_shaders::cases::round_to_f16(x);
        assert_eq!(got.to_bits(), want.to_bits(), "{x:e}: got {got:e}, half gives {want:e}");
    }
}
