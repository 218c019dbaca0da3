//! Image files a user may hand over, good and bad, through the decoder the CLI and the browser
//! share (`media::image::decode`): elongated or cut-short files are refused with a sentence before
//! anything large is allocated; ordinary ones decode.

use i2vgen::media::image::decode;
use image::{ExtendedColorType, ImageFormat};

/// A `width`×`height` RGB picture with detail everywhere (so a JPEG has a long scan), encoded.
fn encoded(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut bytes = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut bytes),
        &pixels,
        width,
        height,
        ExtendedColorType::Rgb8,
        format,
    )
    .unwrap();
    bytes
}

fn refusal(what: &str, bytes: &[u8]) -> String {
    match decode(bytes) {
        Ok(image) => panic!("{what}: a {}×{} image was accepted", image.width, image.height),
        Err(err) => err.to_string(),
    }
}

#[test]
fn an_elongated_strip_is_refused_from_its_header() {
    // 16×100000 compresses to a few hundred kilobytes (14 KB at best); at 1280×704 its cover resize asked for 30.7 GB.
    let mut strip = Vec::new();
    image::GrayImage::new(16, 100_000).write_to(&mut std::io::Cursor::new(&mut strip), ImageFormat::Png).unwrap();
    assert!(strip.len() < 300_000, "{} bytes", strip.len());
    let message = refusal("16×100000", &strip);
    assert!(message.contains("16×100000 pixels, too long and thin: aspect ratios up to 1:8 work"), "{message}");
    let message = refusal("200×24", &encoded(200, 24, ImageFormat::Png));
    assert!(message.contains("200×24 pixels, too long and thin"), "{message}");
    // 1:8 exactly is still a picture.
    let image = decode(&encoded(16, 128, ImageFormat::Png)).unwrap();
    assert_eq!((image.width, image.height), (16, 128));
}

#[test]
fn cut_short_files_are_refused() {
    let jpeg = encoded(64, 48, ImageFormat::Jpeg);
    let png = encoded(64, 48, ImageFormat::Png);
    let webp = encoded(64, 48, ImageFormat::WebP);
    for (name, bytes) in [("jpeg", &jpeg), ("png", &png), ("webp", &webp)] {
        // Down to the last byte: each format's container says where the file ends.
        for keep in [bytes.len() / 2, bytes.len() * 9 / 10, bytes.len() - 1] {
            let what = format!("{name} cut to {keep} of {} bytes", bytes.len());
            let message = refusal(&what, &bytes[..keep]);
            assert!(message.contains("cut short (truncated)"), "{what}: {message}");
        }
    }
}

#[test]
fn ordinary_images_decode() {
    for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP] {
        let image = decode(&encoded(64, 48, format)).unwrap();
        assert_eq!((image.width, image.height, image.data.len()), (64, 48, 64 * 48 * 3), "{format:?}");
    }
    // Bytes after the JPEG's end (a phone's "motion photo" appends a video) are not a truncation.
    let mut jpeg = encoded(64, 48, ImageFormat::Jpeg);
    let reference = decode(&jpeg).unwrap();
    jpeg.extend_from_slice(b"ftypmp42 and the rest of an appended video");
    assert_eq!(decode(&jpeg).unwrap(), reference);
}
