//! Video containers written in memory: GIF (every platform). The CLI adds MP4, the page WebM.

/// 8-bit RGB frames (`width * height * 3` bytes each) → an endlessly looping GIF.
pub fn gif(frames: &[Vec<u8>], width: usize, height: usize, fps: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, width as u16, height as u16, &[]).expect("writing to memory");
        encoder.set_repeat(gif::Repeat::Infinite).expect("writing to memory");
        // GIF delays are in 1/100 s.
        let delay = (100.0 / fps.max(1) as f64).round().max(1.0) as u16;
        for rgb in frames {
            let mut frame = gif::Frame::from_rgb_speed(width as u16, height as u16, rgb, 10);
            frame.delay = delay;
            encoder.write_frame(&frame).expect("writing to memory");
        }
    }
    out
}

/// Frames in [0, 1] as 8-bit values (round to nearest, clamped).
pub fn to_u8(values: &[f32]) -> Vec<u8> {
    values.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect()
}
