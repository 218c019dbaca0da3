//! AV1 in WebM for `--output x.webm`: rav1e (pure Rust) encodes, libwebm (the `webm` crate)
//! writes the container, following Matroska's AV1 mapping.

use anyhow::{Result, anyhow, bail};

/// AV1 (8-bit 4:2:0, BT.709 limited range, no frame reordering, one keyframe) in a WebM with cues
/// and a duration. Frames must have even sizes (the pipeline's are multiples of 8).
pub fn write(
    file: impl std::io::Write + std::io::Seek,
    frames: &[Vec<u8>],
    width: usize,
    height: usize,
    fps: usize,
) -> Result<()> {
    use rav1e::color::{ColorDescription, ColorPrimaries, MatrixCoefficients, PixelRange, TransferCharacteristics};
    use rav1e::prelude::{ChromaSampling, Config, EncoderConfig, EncoderStatus, FrameType, Rational, SpeedSettings};
    use webm::mux;

    let bt709 = ColorDescription {
        color_primaries: ColorPrimaries::BT709,
        transfer_characteristics: TransferCharacteristics::BT709,
        matrix_coefficients: MatrixCoefficients::BT709,
    };
    let encoder = EncoderConfig {
        width,
        height,
        time_base: Rational::new(1, fps as u64),
        bit_depth: 8,
        chroma_sampling: ChromaSampling::Cs420,
        pixel_range: PixelRange::Limited,
        color_description: Some(bt709),
        low_latency: true,
        max_key_frame_interval: frames.len() as u64,
        quantizer: 80,
        speed_settings: SpeedSettings::from_preset(10),
        ..Default::default()
    };
    let mut context = Config::new()
        .with_encoder_config(encoder)
        .new_context::<u8>()
        .map_err(|e| anyhow!("the AV1 encoder refused {width}×{height} at {fps} fps: {e}"))?;

    // Encode everything first: the container's codec header wants the sequence header OBU that
    // the first packet carries.
    let mut packets = Vec::with_capacity(frames.len());
    let mut pending = frames.iter();
    loop {
        match context.receive_packet() {
            Ok(packet) => packets.push((packet.input_frameno, packet.frame_type == FrameType::KEY, packet.data)),
            Err(EncoderStatus::Encoded) => {}
            Err(EncoderStatus::NeedMoreData) => match pending.next() {
                Some(rgb) => {
                    let mut frame = context.new_frame();
                    let planes = yuv420_bt709(rgb, width, height);
                    for (plane, (data, stride)) in
                        frame.planes.iter_mut().zip(planes.iter().zip([width, width / 2, width / 2]))
                    {
                        plane.copy_from_raw_u8(data, stride, 1);
                    }
                    context.send_frame(frame).map_err(|e| anyhow!("AV1 encoder: {e}"))?;
                }
                None => context.flush(),
            },
            Err(EncoderStatus::LimitReached) => break,
            Err(e) => bail!("AV1 encoder: {e}"),
        }
    }
    // CodecPrivate: the av1C record, then the sequence header OBU (Matroska's AV1 mapping).
    let sequence_header = packets
        .first()
        .and_then(|(_, _, data)| obus(data).find(|obu| obu_type(obu) == OBU_SEQUENCE_HEADER))
        .ok_or_else(|| anyhow!("the AV1 encoder wrote no sequence header"))?;
    let codec_private = [&context.container_sequence_header()[..], sequence_header].concat();

    let writer = mux::Writer::new(file);
    let (builder, track) = mux::SegmentBuilder::new(writer)
        .and_then(|b| b.set_writing_app(concat!("i2vgen ", env!("CARGO_PKG_VERSION"))))
        .and_then(|b| b.add_video_track(width as u32, height as u32, mux::VideoCodecId::AV1, None))
        .map_err(|e| anyhow!("{e}"))?;
    let mut segment = builder
        .set_codec_private(track, &codec_private)
        .and_then(|b| {
            b.set_color(
                track,
                8,
                mux::ColorSubsampling { chroma_horizontal: 1, chroma_vertical: 1 },
                mux::ColorRange::Broadcast,
            )
        })
        .and_then(|b| b.set_primaries(track, mux::ColorPrimaries::Bt709))
        .and_then(|b| b.set_transfer_characteristics(track, mux::TransferCharacteristics::Bt709))
        .and_then(|b| b.set_matrix_coefficients(track, mux::MatrixCoefficients::Bt709))
        .map_err(|e| anyhow!("{e}"))?
        .build();
    let frame_ns = 1_000_000_000 / fps as u64;
    for (frameno, keyframe, data) in &packets {
        // Blocks hold no temporal delimiters in Matroska.
        let data: Vec<u8> =
            obus(data).filter(|obu| obu_type(obu) != OBU_TEMPORAL_DELIMITER).flatten().copied().collect();
        segment.add_frame(track, &data, frameno * frame_ns, *keyframe).map_err(|e| anyhow!("{e}"))?;
    }
    // libwebm's segment duration is in its timecode scale (1 ms by default).
    let duration_ms = (frames.len() as u64 * frame_ns) as f64 / 1e6;
    segment.finalize(Some(duration_ms.round() as u64)).map_err(|_| anyhow!("finishing the WebM container failed"))?;
    Ok(())
}

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;

fn obu_type(obu: &[u8]) -> u8 {
    (obu[0] >> 3) & 0x0f
}

/// The OBUs of an AV1 packet, each with its header (rav1e writes every OBU with a size field).
fn obus(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let header = *data.first()?;
        let mut at = 1 + usize::from(header & 0x04 != 0); // the extension byte
        let mut size = 0usize;
        if header & 0x02 != 0 {
            for shift in (0..56).step_by(7) {
                let byte = *data.get(at)?;
                at += 1;
                size |= usize::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
            }
        } else {
            size = data.len() - at;
        }
        let end = (at + size).min(data.len());
        let (obu, rest) = data.split_at(end);
        data = rest;
        Some(obu)
    })
}

/// 8-bit RGB → Y, Cb, Cr planes (BT.709, limited range; chroma averaged over 2×2 pixels).
fn yuv420_bt709(rgb: &[u8], width: usize, height: usize) -> [Vec<u8>; 3] {
    const KR: f32 = 0.2126;
    const KB: f32 = 0.0722;
    let pixel = |x: usize, y: usize| {
        let i = 3 * (y * width + x);
        [rgb[i], rgb[i + 1], rgb[i + 2]].map(|c| c as f32 / 255.0)
    };
    let luma = |[r, g, b]: [f32; 3]| KR * r + (1.0 - KR - KB) * g + KB * b;
    let to_u8 = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    let mut y_plane = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            y_plane.push(to_u8(16.0 + 219.0 * luma(pixel(x, y))));
        }
    }
    let (cw, ch) = (width / 2, height / 2);
    let (mut cb, mut cr) = (Vec::with_capacity(cw * ch), Vec::with_capacity(cw * ch));
    for y in 0..ch {
        for x in 0..cw {
            let mut sum = [0.0f32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = pixel(2 * x + dx, 2 * y + dy);
                for c in 0..3 {
                    sum[c] += p[c] / 4.0;
                }
            }
            let l = luma(sum);
            cb.push(to_u8(128.0 + 224.0 * (sum[2] - l) / (2.0 * (1.0 - KB))));
            cr.push(to_u8(128.0 + 224.0 * (sum[0] - l) / (2.0 * (1.0 - KR))));
        }
    }
    [y_plane, cb, cr]
}
