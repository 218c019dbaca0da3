//! Video quality against a reference video: per-frame PSNR and SSIM, and a temporal-difference
//! score, for judging a faster sampler against the reference one. Pure functions on frames held in
//! memory; no upstream file is ported (SSIM follows Wang et al. 2004 and their `ssim_index.m`).

use crate::{Error, Result};

/// One RGB frame with values in [0, 1], rows top to bottom, pixels interleaved (`[H, W, 3]`).
/// Built by [`Frame::new`], which checks the length, so every metric can index it freely.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    width: usize,
    height: usize,
    rgb: &'a [f32],
}

impl<'a> Frame<'a> {
    /// # Shapes
    /// `rgb`: `[height, width, 3]`, row-major.
    pub fn new(width: usize, height: usize, rgb: &'a [f32]) -> Result<Self> {
        if width == 0 || height == 0 || rgb.len() != width * height * 3 {
            return Err(Error::request(
                "frames",
                format!("an RGB frame of {width}×{height} needs {} values, got {}", width * height * 3, rgb.len()),
            ));
        }
        Ok(Self { width, height, rgb })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn rgb(&self) -> &'a [f32] {
        self.rgb
    }

    /// Luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601), one value per pixel.
    fn luma(&self) -> Vec<f64> {
        self.rgb
            .chunks_exact(3)
            .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
            .collect()
    }
}

fn same_size(a: &Frame, b: &Frame) -> Result<()> {
    if (a.width, a.height) != (b.width, b.height) {
        return Err(Error::request(
            "frames",
            format!(
                "the frames differ in size: the first is {}×{}, the second {}×{}",
                a.width, a.height, b.width, b.height
            ),
        ));
    }
    Ok(())
}

/// Mean of |x − y| over two equally long slices, in f64.
fn mean_abs_diff(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(p, q)| (f64::from(*p) - f64::from(*q)).abs()).sum::<f64>() / x.len() as f64
}

/// Peak signal-to-noise ratio in dB with peak 1.0: `10 · log10(1 / MSE)`, the mean squared error
/// taken over every R, G and B value. Identical frames give `f64::INFINITY`.
pub fn psnr(a: &Frame, b: &Frame) -> Result<f64> {
    same_size(a, b)?;
    let squared: f64 = a.rgb.iter().zip(b.rgb).map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2)).sum();
    let mse = squared / a.rgb.len() as f64;
    Ok(if mse == 0.0 { f64::INFINITY } else { -10.0 * mse.log10() })
}

/// The SSIM window's standard deviation and its largest side (Wang et al.).
const SSIM_SIGMA: f64 = 1.5;
const SSIM_WINDOW: usize = 11;
/// `C1 = (K1·L)²`, `C2 = (K2·L)²` with K1 = 0.01, K2 = 0.03 and dynamic range L = 1.
const SSIM_C1: f64 = 0.01 * 0.01;
const SSIM_C2: f64 = 0.03 * 0.03;

/// The normalised 1-D Gaussian of `size` taps (odd) with σ = 1.5.
fn gaussian(size: usize) -> Vec<f64> {
    let centre = (size / 2) as f64;
    let taps: Vec<f64> =
        (0..size).map(|i| (-(i as f64 - centre).powi(2) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp()).collect();
    let total: f64 = taps.iter().sum();
    taps.iter().map(|t| t / total).collect()
}

/// A separable filter with `kernel` along both axes, at the valid positions only (no padding).
///
/// # Shapes
/// `plane`: `[height, width]` → `[height - k + 1, width - k + 1]` with `k = kernel.len()`.
fn filter_valid(plane: &[f64], width: usize, height: usize, kernel: &[f64]) -> Vec<f64> {
    let k = kernel.len();
    let (out_w, out_h) = (width + 1 - k, height + 1 - k);
    let mut rows = vec![0.0; out_w * height];
    for y in 0..height {
        let row = &plane[y * width..(y + 1) * width];
        for x in 0..out_w {
            rows[y * out_w + x] = kernel.iter().zip(&row[x..x + k]).map(|(w, v)| w * v).sum();
        }
    }
    let mut out = vec![0.0; out_w * out_h];
    for y in 0..out_h {
        for (i, w) in kernel.iter().enumerate() {
            let src = &rows[(y + i) * out_w..(y + i + 1) * out_w];
            for (o, v) in out[y * out_w..(y + 1) * out_w].iter_mut().zip(src) {
                *o += w * v;
            }
        }
    }
    out
}

/// Structural similarity (Wang, Bovik, Sheikh and Simoncelli 2004) on luma
/// Y = 0.299 R + 0.587 G + 0.114 B, with an 11×11 Gaussian window of σ = 1.5, K1 = 0.01, K2 = 0.03
/// and L = 1: the SSIM map at every position where the window lies wholly inside the frame (no
/// padding, as `filter2(…, 'valid')` in the reference `ssim_index.m`), then its mean. Identical
/// frames give 1.
///
/// A frame narrower or shorter than 11 pixels uses the largest odd window that fits (σ stays 1.5
/// and the Gaussian is renormalised over the smaller window); a 1-pixel side gives a 1×1 window,
/// where SSIM reduces to the luminance term per pixel.
pub fn ssim(a: &Frame, b: &Frame) -> Result<f64> {
    same_size(a, b)?;
    let (width, height) = (a.width, a.height);
    let side = SSIM_WINDOW.min(width).min(height);
    let kernel = gaussian(if side % 2 == 0 { side - 1 } else { side });
    let (x, y) = (a.luma(), b.luma());
    let product = |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(u, v)| u * v).collect() };
    let filter = |plane: &[f64]| filter_valid(plane, width, height, &kernel);
    let (mu_x, mu_y) = (filter(&x), filter(&y));
    let (xx, yy, xy) = (filter(&product(&x, &x)), filter(&product(&y, &y)), filter(&product(&x, &y)));
    let mut total = 0.0;
    for i in 0..mu_x.len() {
        let (mx, my) = (mu_x[i], mu_y[i]);
        let (var_x, var_y, cov) = (xx[i] - mx * mx, yy[i] - my * my, xy[i] - mx * my);
        total += ((2.0 * mx * my + SSIM_C1) * (2.0 * cov + SSIM_C2))
            / ((mx * mx + my * my + SSIM_C1) * (var_x + var_y + SSIM_C2));
    }
    Ok(total / mu_x.len() as f64)
}

fn same_length(a: &[Frame], b: &[Frame]) -> Result<()> {
    if a.is_empty() || b.is_empty() {
        return Err(Error::request("frames", "a video to compare has no frames"));
    }
    if a.len() != b.len() {
        return Err(Error::request(
            "frames",
            format!("the videos differ in length: the first has {} frames, the second {}", a.len(), b.len()),
        ));
    }
    same_size(&a[0], &b[0]).map_err(|_| {
        Error::request(
            "frames",
            format!(
                "the videos differ in frame size: the first is {}×{}, the second {}×{}",
                a[0].width, a[0].height, b[0].width, b[0].height
            ),
        )
    })
}

/// How much one video changes from frame to frame: `m[k] = mean |f[k+1] − f[k]|` over every R, G
/// and B value, for each consecutive pair.
fn motion(frames: &[Frame]) -> Result<Vec<f64>> {
    frames
        .windows(2)
        .map(|pair| {
            same_size(&pair[0], &pair[1])?;
            Ok(mean_abs_diff(pair[1].rgb, pair[0].rgb))
        })
        .collect()
}

/// The flicker difference of two equally long videos:
///
/// `TD = 1/(F−1) · Σ_{k=0}^{F−2} | mA[k] − mB[k] |`, with `m[k] = mean |f[k+1] − f[k]|` over every
/// R, G and B value (values in [0, 1]).
///
/// It is 0 when both videos change by the same amount between every pair of frames, and grows
/// when one flickers or moves more than the other (in units of mean intensity change per frame);
/// it does not see *where* the change happens, only how much. A one-frame video has no pairs:
/// the score is then 0.
pub fn temporal_difference(a: &[Frame], b: &[Frame]) -> Result<f64> {
    same_length(a, b)?;
    let (ma, mb) = (motion(a)?, motion(b)?);
    if ma.is_empty() {
        return Ok(0.0);
    }
    Ok(ma.iter().zip(&mb).map(|(p, q)| (p - q).abs()).sum::<f64>() / ma.len() as f64)
}

/// Every number of a comparison of a video against a reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Per frame, in dB; `f64::INFINITY` where the frames are identical.
    pub psnr: Vec<f64>,
    /// Per frame, at most 1.
    pub ssim: Vec<f64>,
    /// The arithmetic mean of `psnr` (infinite as soon as one frame is identical).
    pub mean_psnr: f64,
    pub mean_ssim: f64,
    /// [`temporal_difference`].
    pub temporal_difference: f64,
}

/// PSNR and SSIM of each pair of frames, their means, and the temporal difference. The videos
/// must have the same number of frames, all of one size.
pub fn compare(a: &[Frame], b: &[Frame]) -> Result<Comparison> {
    same_length(a, b)?;
    let psnr = a.iter().zip(b).map(|(p, q)| psnr(p, q)).collect::<Result<Vec<_>>>()?;
    let ssim = a.iter().zip(b).map(|(p, q)| ssim(p, q)).collect::<Result<Vec<_>>>()?;
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    Ok(Comparison {
        mean_psnr: mean(&psnr),
        mean_ssim: mean(&ssim),
        temporal_difference: temporal_difference(a, b)?,
        psnr,
        ssim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth colour gradient with some texture, `[h, w, 3]` in [0, 1].
    fn picture(width: usize, height: usize) -> Vec<f32> {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
                rgb.extend([u, v, 0.5 + 0.4 * ((x * 7 + y * 3) as f32 * 0.3).sin()]);
            }
        }
        rgb
    }

    /// A fixed pseudo-random sequence in [-1, 1] (xorshift), so the test is repeatable.
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn identical_frames_give_infinite_psnr_and_unit_ssim() {
        let rgb = picture(32, 24);
        let frame = Frame::new(32, 24, &rgb).unwrap();
        assert_eq!(psnr(&frame, &frame).unwrap(), f64::INFINITY);
        assert!((ssim(&frame, &frame).unwrap() - 1.0).abs() < 1e-12);
    }

    /// A constant offset d gives MSE = d², so PSNR = −20·log10(d): 20 dB for 0.1, 40 dB for 0.01.
    #[test]
    fn a_constant_offset_gives_the_analytic_psnr() {
        let base = vec![0.25f32; 16 * 8 * 3];
        for (offset, expected) in [(0.1f32, 20.0), (0.01, 40.0), (0.5, 10.0 * 4f64.log10())] {
            let shifted: Vec<f32> = base.iter().map(|v| v + offset).collect();
            let (a, b) = (Frame::new(16, 8, &base).unwrap(), Frame::new(16, 8, &shifted).unwrap());
            // f32 rounding of 0.25 + d moves the offset by ≤ 3e-8: ≤ 3e-6 dB.
            let got = psnr(&a, &b).unwrap();
            assert!((got - expected).abs() < 1e-5, "offset {offset}: {got} dB, expected {expected}");
        }
    }

    #[test]
    fn ssim_of_a_noisy_copy_is_below_one_and_symmetric() {
        let (w, h) = (40, 30);
        let clean = picture(w, h);
        let light: Vec<f32> = clean.iter().zip(noise(clean.len(), 7)).map(|(v, n)| v + 0.05 * n).collect();
        let heavy: Vec<f32> = clean.iter().zip(noise(clean.len(), 7)).map(|(v, n)| v + 0.3 * n).collect();
        let [c, l, hv] = [&clean, &light, &heavy].map(|rgb| Frame::new(w, h, rgb).unwrap());
        let (cl, lc, ch) = (ssim(&c, &l).unwrap(), ssim(&l, &c).unwrap(), ssim(&c, &hv).unwrap());
        assert!(cl < 0.999 && cl > 0.0, "SSIM with light noise: {cl}");
        assert!((cl - lc).abs() < 1e-12, "not symmetric: {cl} vs {lc}");
        assert!(ch < cl, "more noise must lower SSIM: {ch} ≥ {cl}");
        assert!(psnr(&c, &hv).unwrap() < psnr(&c, &l).unwrap());
    }

    /// The reference value from scikit-image 0.26 `structural_similarity(luma(a), luma(b),
    /// gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)`, which
    /// averages the same valid positions; 1e-9 covers the two filters' summation order.
    #[test]
    fn ssim_matches_scikit_image() {
        let (w, h) = (24, 20);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let v = ((x as f64 * 0.04 + y as f64 * 0.02 + c as f64 * 0.1) % 1.0) as f32;
                    a.push(v);
                    let noise = 0.1 * (x as f64 * 1.7 + y as f64 * 2.3 + c as f64).sin();
                    b.push((f64::from(v) + noise).clamp(0.0, 1.0) as f32);
                }
            }
        }
        let got = ssim(&Frame::new(w, h, &a).unwrap(), &Frame::new(w, h, &b).unwrap()).unwrap();
        assert!((got - 0.8012863788692621).abs() < 1e-9, "{got}");
    }

    /// A window of one pixel is pure luminance comparison: (2xy + C1) / (x² + y² + C1).
    #[test]
    fn frames_smaller_than_the_window_use_the_largest_odd_one() {
        assert_eq!(gaussian(11).len(), 11);
        assert!((gaussian(5).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let (a, b) = (vec![0.2f32; 3], vec![0.6f32; 3]);
        let got = ssim(&Frame::new(1, 1, &a).unwrap(), &Frame::new(1, 1, &b).unwrap()).unwrap();
        let (x, y) = (f64::from(0.2f32), f64::from(0.6f32));
        let expected = (2.0 * x * y + SSIM_C1) / (x * x + y * y + SSIM_C1);
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
        // 4 pixels high → a 3×3 window: 2 rows of positions; still 1 for identical frames.
        let rgb = picture(20, 4);
        let frame = Frame::new(20, 4, &rgb).unwrap();
        assert!((ssim(&frame, &frame).unwrap() - 1.0).abs() < 1e-12);
    }

    /// The valid-position mean matches a direct (non-separable) 2-D evaluation.
    #[test]
    fn separable_filter_matches_the_direct_window() {
        let (w, h) = (15, 13);
        let plane: Vec<f64> = noise(w * h, 3).iter().map(|&v| f64::from(v)).collect();
        let kernel = gaussian(11);
        let got = filter_valid(&plane, w, h, &kernel);
        assert_eq!(got.len(), 5 * 3);
        for oy in 0..3 {
            for ox in 0..5 {
                let mut direct = 0.0;
                for i in 0..11 {
                    for j in 0..11 {
                        direct += kernel[i] * kernel[j] * plane[(oy + i) * w + ox + j];
                    }
                }
                assert!((got[oy * 5 + ox] - direct).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn temporal_difference_measures_the_difference_in_motion() {
        let (w, h) = (4, 4);
        let n = w * h * 3;
        // A steps 0.1 per frame, B 0.3 per frame, C is A shifted by a constant.
        let video =
            |step: f32, base: f32| -> Vec<Vec<f32>> { (0..3).map(|k| vec![base + step * k as f32; n]).collect() };
        fn frames(v: &[Vec<f32>]) -> Vec<Frame<'_>> {
            v.iter().map(|f| Frame::new(4, 4, f).unwrap()).collect()
        }
        let (a, b, c) = (video(0.1, 0.0), video(0.3, 0.0), video(0.1, 0.05));
        let (a, b, c) = (frames(&a), frames(&b), frames(&c));
        let ab = temporal_difference(&a, &b).unwrap();
        assert!((ab - 0.2).abs() < 1e-6, "{ab}");
        assert!(temporal_difference(&a, &c).unwrap() < 1e-6);
        assert_eq!(temporal_difference(&a[..1], &b[..1]).unwrap(), 0.0);
        let report = compare(&a, &c).unwrap();
        assert_eq!(report.psnr.len(), 3);
        assert!(report.psnr.iter().all(|p| (p - 26.0206).abs() < 1e-3), "{:?}", report.psnr);
        assert!((report.mean_psnr - 26.0206).abs() < 1e-3);
    }

    #[test]
    fn mismatches_are_sentences_not_panics() {
        let (small, large) = (vec![0.0f32; 2 * 2 * 3], vec![0.0f32; 3 * 2 * 3]);
        assert!(Frame::new(3, 3, &small).unwrap_err().to_string().contains("needs 27 values, got 12"));
        let (s, l) = (Frame::new(2, 2, &small).unwrap(), Frame::new(3, 2, &large).unwrap());
        assert!(psnr(&s, &l).unwrap_err().to_string().contains("the first is 2×2, the second 3×2"));
        let err = compare(&[s, s], &[s]).unwrap_err().to_string();
        assert!(err.contains("the first has 2 frames, the second 1"), "{err}");
        let err = compare(&[s], &[l]).unwrap_err().to_string();
        assert!(err.contains("differ in frame size"), "{err}");
        assert!(compare(&[], &[]).unwrap_err().to_string().contains("no frames"));
    }
}
