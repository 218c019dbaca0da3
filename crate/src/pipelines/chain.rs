//! Longer videos by chaining clips: clip k+1 starts from clip k's last frame as its image, and
//! the video is the clips end to end without the repeated frame.

use crate::Result;
use crate::media::image::RgbImage;
use crate::media::video::to_u8;

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
    fn the_last_frame_becomes_an_8_bit_image() {
        let image = next_image(&[0.0, 0.5, 1.0, 1.2, -0.1, 0.25], 2, 1).unwrap();
        assert_eq!((image.width, image.height), (2, 1));
        assert_eq!(image.data, [0, 128, 255, 255, 0, 64]);
        assert!(next_image(&[0.0; 5], 2, 1).is_err());
    }
}
