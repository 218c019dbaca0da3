//! The device check gives the same numbers on the CPU backend and on wgpu.

use crate::common;

use i2vgen::diagnostics::device_check;

#[test]
fn inputs_are_deterministic_and_in_range() {
    let a = device_check::pseudo_random(1000, 7);
    assert_eq!(a, device_check::pseudo_random(1000, 7));
    assert_ne!(a, device_check::pseudo_random(1000, 8));
    assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    let mean = a.iter().sum::<f32>() / a.len() as f32;
    assert!(mean.abs() < 0.1, "mean {mean} is not centred");
}

#[test]
fn wgpu_matches_cpu() {
    let outputs = common::devices().map(|(name, device)| {
        let out = device_check::forward(&device).into_data().try_to_vec::<f32>().unwrap();
        let sum = device_check::checksum(&device).into_scalar::<f32>();
        (name, out, sum)
    });
    let [(_, cpu, cpu_sum), (_, gpu, gpu_sum)] = outputs;
    assert_eq!(cpu.len(), 2 * 120 * 8);
    assert!(cpu.iter().all(|v| v.is_finite()));
    let diff = common::max_abs_diff(&cpu, &gpu);
    // f32 with different summation orders: a few ulps on values of order 1.
    assert!(diff < 1e-5, "wgpu differs from cpu by {diff}");
    let rel = ((cpu_sum - gpu_sum) / cpu_sum).abs();
    assert!(rel < 1e-5, "checksums differ: cpu {cpu_sum}, wgpu {gpu_sum}");
}
