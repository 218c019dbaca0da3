//! Pictures in and out: image decoding with Pillow-exact resampling, GIF encoding.

pub mod image;
pub mod video;
