//! Pictures in and out: image decoding with Pillow-exact resampling, GIF encoding, and video
//! quality metrics (PSNR, SSIM, temporal difference).

pub mod image;
pub mod quality;
pub mod video;
