//! Longer videos by chaining clips: clip k+1 starts from clip k's last frame as its image, and
//! the video is the clips end to end without the repeated frame.

use crate::media::image::RgbImage;
use crate::media::video::to_u8;
use crate::pipelines::pipeline_i2vgen_xl::MAX_FRAMES;
use crate::{Error, Result};

/// The most clips one run chains. With the model's 16-frame clips that is 121 frames, 7.5 s at
/// 16 fps; with the longest clips ([`MAX_FRAMES`], 64) 505 frames, which the CLI holds as f32
/// (5.5 GB at the model's 1280×704) and the refiner refines in one piece. Each clip also starts
/// from the last one's 8-bit frame, so the drift from the first image grows with every clip: past
/// 8, a longer video wants a new first image, not more clips.
pub const MAX_CLIPS: usize = 8;

/// A clip count a run can chain: 1 to [`MAX_CLIPS`] (`frames`: per clip, for the sentence).
pub fn check_clips(clips: usize, frames: usize) -> Result<()> {
    if (1..=MAX_CLIPS).contains(&clips) {
        return Ok(());
    }
    let mut message = format!("clips must be between 1 and {MAX_CLIPS}, got {clips}");
    if clips > MAX_CLIPS {
        // u128: a count typed at the CLI can be usize::MAX.
        let video = (clips as u128 * frames as u128).saturating_sub(clips as u128 - 1);
        message += &format!(" (a {video}-frame video)");
        if frames < MAX_FRAMES {
            message += &format!("; for a longer video make each clip longer, up to {MAX_FRAMES} frames");
        }
    }
    Err(Error::request("clips", message))
}

/// The image the next clip starts from: a decoded frame (`[H, W, 3]` in [0, 1], row-major) as the
/// 8-bit picture a written video would hold.
pub fn next_image(last_frame: &[f32], width: usize, height: usize) -> Result<RgbImage> {
    RgbImage::new(width, height, to_u8(last_frame))
}

/// Append a clip to the video: all its frames for the first clip, all but the first (the
/// previous clip's last frame, animated again) after that. F-frame clips give `n·F − (n − 1)`.
pub fn append_clip<T>(video: &mut Vec<T>, clip: Vec<T>) {
    let skip = usize::from(!video.is_empty());
    video.extend(clip.into_iter().skip(skip));
}

/// The seed of clip `k` (0-based) of a run seeded `seed`: consecutive seeds, so clip 0 is the
/// single-clip run. The refiner of an `n`-clip run takes `seed + n`.
pub fn clip_seed(seed: u64, k: usize) -> u64 {
    seed.wrapping_add(k as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_join_without_the_repeated_frame() {
        let mut video = Vec::new();
        append_clip(&mut video, vec![1, 2, 3, 4]);
        append_clip(&mut video, vec![4, 5, 6, 7]);
        append_clip(&mut video, vec![7, 8, 9, 10]);
        assert_eq!(video, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn clip_counts_are_bounded() {
        assert!(check_clips(1, 16).is_ok() && check_clips(MAX_CLIPS, MAX_FRAMES).is_ok());
        let refused = |clips, frames| check_clips(clips, frames).unwrap_err().to_string();
        assert_eq!(refused(0, 16), "clips must be between 1 and 8, got 0");
        assert_eq!(
            refused(9, 16),
            "clips must be between 1 and 8, got 9 (a 136-frame video); for a longer video make each clip longer, up to 64 frames"
        );
        assert_eq!(refused(1_000_000, 64), "clips must be between 1 and 8, got 1000000 (a 63000001-frame video)");
        assert!(refused(usize::MAX, 16).contains("got 18446744073709551615"));
    }

    #[test]
    fn the_last_frame_becomes_an_8_bit_image() {
        let image = next_image(&[0.0, 0.5, 1.0, 1.2, -0.1, 0.25], 2, 1).unwrap();
        assert_eq!((image.width, image.height), (2, 1));
        assert_eq!(image.data, [0, 128, 255, 255, 0, 64]);
        assert!(next_image(&[0.0; 5], 2, 1).is_err());
    }
}
