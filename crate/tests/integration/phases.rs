//! The two phases of a base run (encode with the CLIP encoders, denoise with the UNet) on a
//! pipeline that holds one phase's networks at a time, as the page does when the memory plan
//! frees them: the video is bit for bit the one of a pipeline that holds everything, and a phase
//! whose networks are not loaded is refused with a sentence.

use burn::tensor::Device;
use i2vgen::pipelines::noise::Draws;
use i2vgen::pipelines::pipeline_i2vgen_xl::{I2VGenXLPipeline, Phase};
use i2vgen::pipelines::sampling::Sampling;
use i2vgen::pipelines::stage::Stage;

use crate::common;
use crate::sampling::{image, request, run};

fn load(device: &Device, phases: &[Phase]) -> I2VGenXLPipeline {
    I2VGenXLPipeline::load_phases(common::open_fixture("tiny-i2vgen").as_mut(), device, &mut Vec::new(), phases)
        .unwrap()
}

#[test]
fn a_run_with_one_phase_loaded_at_a_time_equals_a_run_with_everything_loaded() {
    for (backend, device) in common::devices() {
        let request = request(2, Sampling::MODEL);
        let noise = |pipeline: &I2VGenXLPipeline| {
            pipeline.draw_noise(&request, &mut Draws::new(7, None, &device).unwrap()).unwrap()
        };
        let whole = load(&device, &[Phase::Encode, Phase::Denoise]);
        let expected = run(&mut whole.prepare(request.clone(), &image(), noise(&whole), &device).unwrap()).1;

        let mut phased = load(&device, &[Phase::Encode]);
        assert!(phased.has(Phase::Encode) && !phased.has(Phase::Denoise), "{backend}");
        let conditioning = phased.encode(request.clone(), &image(), noise(&phased), &device).unwrap();
        let before = device.memory_pool_usage();
        phased.free(Phase::Encode);
        device.memory_cleanup();
        if let (Some(before), Some(after)) = (before, device.memory_pool_usage()) {
            // The encoders' pages go back to the device, not only to burn's pool.
            eprintln!(
                "{backend}: reserved {} → {} bytes, in use {} → {}",
                before.bytes_reserved, after.bytes_reserved, before.bytes_in_use, after.bytes_in_use
            );
            assert!(after.bytes_in_use < before.bytes_in_use, "{backend}");
            assert!(after.bytes_reserved < before.bytes_reserved, "{backend}");
        }
        let refused = phased.encode(request.clone(), &image(), noise(&phased), &device).err().expect("refused");
        assert_eq!(
            refused.to_string(),
            "the text_encoder and image_encoder networks are not loaded; load them (load_phase) before this call",
            "{backend}"
        );
        phased.load_phase(Phase::Denoise, common::open_fixture("tiny-i2vgen").as_mut(), &device).unwrap();
        let mut generation = phased.denoise(conditioning).unwrap();
        // The run holds its UNet: the pipeline may let go of it before the run ends.
        phased.free(Phase::Denoise);
        assert_eq!(generation.num_steps(), 2, "{backend}");
        assert_eq!(run(&mut generation).1, expected, "{backend}: the phased run differs");
    }
}
