//! Pictures in and out of the page, with no GPU: checking an image, frames to 8-bit pixels, GIF.

use wasm_bindgen::prelude::*;

use crate::IntoJs;

/// Decode an image file only to check it (before any model is loaded): `[width, height]`, or
/// the sentence that says what is wrong with it (not an image, cut short, too large, too
/// elongated, too small to animate).
#[wasm_bindgen(js_name = checkImage)]
pub fn check_image(bytes: &[u8]) -> Result<Vec<u32>, JsError> {
    let image = i2vgen::media::image::decode(bytes).js()?;
    i2vgen::pipelines::pipeline_i2vgen_xl::check_image(&image).js()?;
    Ok(vec![image.width as u32, image.height as u32])
}

/// Values in [0, 1] → 8-bit RGBA (`channels` values per pixel, 3 or 4; alpha 255 for RGB).
#[wasm_bindgen(js_name = toRgba)]
pub fn to_rgba(values: &[f32], channels: usize) -> Vec<u8> {
    let bytes = i2vgen::media::video::to_u8(values);
    bytes
        .chunks(channels.max(1))
        .flat_map(|p| {
            let byte = |i: usize| p.get(i).copied().unwrap_or(255);
            [byte(0), byte(1), byte(2), if channels == 4 { byte(3) } else { 255 }]
        })
        .collect()
}

/// 8-bit RGBA frames (`count` of `width`×`height`, concatenated) → a looping GIF.
#[wasm_bindgen(js_name = encodeGif)]
pub fn encode_gif(rgba: &[u8], width: usize, height: usize, count: usize, fps: usize) -> Vec<u8> {
    let frames: Vec<Vec<u8>> = rgba
        .chunks(width * height * 4)
        .take(count)
        .map(|f| f.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect())
        .collect();
    i2vgen::media::video::gif(&frames, width, height, fps)
}
