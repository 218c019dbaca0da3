//! One shape for both stages of the cascade. A prepared run ([`Stage`]) holds its pipeline and a
//! [`Denoising`] state; the caller loops `step` (awaiting [`Stage::fence`] between steps for real
//! progress and cancellation), then `decode_frame` for each frame. The guided step — the UNet on
//! [uncond, cond], classifier-free guidance, the scheduler update — is written once, here.

use burn::tensor::{FloatDType, Tensor, TensorData};

use super::sampling::Sampling;
use crate::models::frame_chunks::FrameChunks;
use crate::models::vae::AutoencoderKL;
use crate::schedulers::Scheduler;
use crate::{Error, Result};

/// The latents of a run and where it is in its schedule.
pub struct Denoising {
    /// `[1, C, F, h, w]`
    latents: Tensor<5>,
    scheduler: Box<dyn Scheduler<Tensor<5>>>,
    /// The timesteps that run (for the refiner, the tail of the schedule `strength` selects).
    timesteps: Vec<i64>,
    step: usize,
    guidance_scale: f64,
    sampling: Sampling,
    /// The deep UNet features of the last full step, one `[F, C, h, w]` per conditioning row
    /// ([uncond, cond]); kept only when `cache_interval > 1`.
    deep_features: [Option<FrameChunks>; 2],
}

/// What the UNet is asked for one group of conditioning rows: the sample (repeated per row),
/// the timestep, the first row and the row count, and the deep features to reuse (a shallow
/// step) or `None` (a full step). It answers the prediction `[batch, C, F, h, w]` and the deep
/// features of this call, `[batch·F, C', h', w']`.
pub type UNetCall<'a> = dyn Fn(Tensor<5>, f32, usize, usize, Option<FrameChunks>) -> (Tensor<5>, FrameChunks) + 'a;

impl Denoising {
    pub fn new(
        latents: Tensor<5>,
        scheduler: Box<dyn Scheduler<Tensor<5>>>,
        timesteps: Vec<i64>,
        guidance_scale: f64,
        sampling: &Sampling,
    ) -> Self {
        Self {
            latents,
            scheduler,
            timesteps,
            step: 0,
            guidance_scale,
            sampling: sampling.clone(),
            deep_features: [None, None],
        }
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

    /// One guided step. `unet` predicts for rows `start..start + batch` of the conditioning
    /// ([uncond, cond] with guidance); with `split_guidance` the two halves run one after the
    /// other (exact: they never interact inside the UNet). After the guidance window only the
    /// conditional row runs; between full steps of the cache interval the deep features of the
    /// last full step are reused. Returns the prediction before guidance, `[B, C, F, h, w]`.
    pub fn step(&mut self, split_guidance: bool, unet: &UNetCall) -> Result<Tensor<5>> {
        if self.is_done() {
            return Err(Error::request("steps", "all denoising steps have run; decode the frames"));
        }
        let i = self.step;
        let t = self.timesteps[i];
        let plan = self.sampling.plan(i, self.timesteps.len(), self.do_classifier_free_guidance());
        let guided = plan.rows.len() == 2;
        let full = plan.full || self.deep_features[plan.rows.clone()].iter().any(Option::is_none);
        let keep = self.sampling.cache_interval > 1;
        let mut run = |start: usize, batch: usize| {
            let deep = (!full).then(|| {
                let rows: Vec<FrameChunks> =
                    self.deep_features[start..start + batch].iter().map(|d| d.clone().expect("cached")).collect();
                FrameChunks::cat(rows)
            });
            let (prediction, deep) =
                unet(Tensor::cat(vec![self.latents.clone(); batch], 0), t as f32, start, batch, deep);
            if full && keep {
                for (k, slot) in self.deep_features[start..start + batch].iter_mut().enumerate() {
                    *slot = Some(deep.videos(k..k + 1));
                }
            }
            prediction
        };
        let noise_pred = if guided && split_guidance {
            Tensor::cat(vec![run(0, 1), run(1, 1)], 0)
        } else {
            run(plan.rows.start, plan.rows.len())
        };
        let prediction = if guided {
            let [uncond, text] = <[Tensor<5>; 2]>::try_from(noise_pred.clone().chunk(2, 0)).expect("two halves");
            uncond.clone() + (text - uncond).mul_scalar(self.guidance_scale)
        } else {
            noise_pred.clone()
        };
        self.latents = self.scheduler.step(prediction, t, self.latents.clone())?;
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
