//! One shape for both stages of the cascade. A prepared run ([`Stage`]) holds its pipeline and a
//! [`Denoising`] state; the caller loops `step` (awaiting [`Stage::fence`] between steps for real
//! progress and cancellation), then `decode_frame` for each frame. The guided step — the UNet on
//! [uncond, cond], classifier-free guidance, the scheduler update — is written once, here.

use burn::tensor::{FloatDType, Tensor, TensorData};

use crate::models::vae::AutoencoderKL;
use crate::schedulers::scheduling_ddim::DDIMScheduler;
use crate::{Error, Result};

/// The latents of a run and where it is in its schedule.
pub struct Denoising {
    /// `[1, C, F, h, w]`
    latents: Tensor<5>,
    scheduler: DDIMScheduler,
    /// The timesteps that run (for the refiner, the tail of the schedule `strength` selects).
    timesteps: Vec<i64>,
    step: usize,
    guidance_scale: f64,
}

impl Denoising {
    pub fn new(latents: Tensor<5>, scheduler: DDIMScheduler, timesteps: Vec<i64>, guidance_scale: f64) -> Self {
        Self { latents, scheduler, timesteps, step: 0, guidance_scale }
    }

    /// Classifier-free guidance runs when the scale is above 1, as in diffusers.
    pub fn do_classifier_free_guidance(&self) -> bool {
        self.guidance_scale > 1.0
    }

    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Steps run so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step == self.timesteps.len()
    }

    /// `[1, C, F, h, w]`
    pub fn latents(&self) -> &Tensor<5> {
        &self.latents
    }

    /// One guided step. `unet(sample, t, start, batch)` predicts for rows `start..start + batch`
    /// of the conditioning ([uncond, cond] with guidance); with `split_guidance` the two halves
    /// run one after the other (exact: they never interact inside the UNet). Returns the
    /// prediction before guidance, `[B, C, F, h, w]`.
    pub fn step(
        &mut self,
        split_guidance: bool,
        unet: impl Fn(Tensor<5>, f32, usize, usize) -> Tensor<5>,
    ) -> Result<Tensor<5>> {
        if self.is_done() {
            return Err(Error::request("steps", "all denoising steps have run; decode the frames"));
        }
        let t = self.timesteps[self.step];
        let cfg = self.do_classifier_free_guidance();
        let run = |start: usize, batch: usize| {
            unet(Tensor::cat(vec![self.latents.clone(); batch], 0), t as f32, start, batch)
        };
        let noise_pred = if cfg && split_guidance {
            Tensor::cat(vec![run(0, 1), run(1, 1)], 0)
        } else {
            run(0, if cfg { 2 } else { 1 })
        };
        let guided = if cfg {
            let [uncond, text] = <[Tensor<5>; 2]>::try_from(noise_pred.clone().chunk(2, 0)).expect("two halves");
            uncond.clone() + (text - uncond).mul_scalar(self.guidance_scale)
        } else {
            noise_pred.clone()
        };
        self.latents = self.scheduler.step(guided, t, self.latents.clone());
        self.step += 1;
        Ok(noise_pred)
    }
}

/// A prepared run of either pipeline.
pub trait Stage {
    fn denoising(&self) -> &Denoising;

    /// Queue one denoising step; returns the UNet's prediction before guidance (for traces).
    fn step(&mut self) -> Result<Tensor<5>>;

    /// The VAE that decodes this run's latents.
    fn vae(&self) -> &AutoencoderKL;

    /// Decode one frame of the finished latents: `[H, W, 3]` in [0, 1].
    fn decode_frame(&self, frame: usize) -> Result<Tensor<3>> {
        let denoising = self.denoising();
        if !denoising.is_done() {
            return Err(Error::request("steps", "the denoising steps have not all run yet"));
        }
        Ok(self.vae().decode_video_frame(denoising.latents(), frame))
    }

    /// Denoising steps this run makes.
    fn num_steps(&self) -> usize {
        self.denoising().timesteps().len()
    }

    /// Frames to decode.
    fn num_frames(&self) -> usize {
        self.denoising().latents().dims()[2]
    }

    /// One element of the latents: reading it back waits for the GPU to finish the steps queued
    /// so far, without copying the latents.
    fn fence(&self) -> Tensor<1> {
        self.denoising().latents().clone().slice([0..1, 0..1, 0..1, 0..1, 0..1]).reshape([1])
    }

    /// A cheap look at the current latents, without the VAE: each latent pixel's channels mapped
    /// linearly to RGB (the usual approximation for the SD VAE's latent space).
    ///
    /// # Shapes
    /// `[F, h, w, 3]` in [0, 1], at the latent size.
    fn preview(&self) -> Tensor<4> {
        const LATENT_RGB: [[f32; 3]; 4] =
            [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]];
        let latents = self.denoising().latents();
        let [_, c, f, h, w] = latents.dims();
        let matrix = Tensor::<2>::from_data(TensorData::new(LATENT_RGB.concat(), [4, 3]), &latents.device());
        let pixels = latents.clone().reshape([c, f * h * w]).swap_dims(0, 1).matmul(matrix.narrow(0, 0, c.min(4)));
        pixels.clamp(-1.0, 1.0).add_scalar(1.0).div_scalar(2.0).reshape([f, h, w, 3]).cast(FloatDType::F32)
    }
}
