//! A 3D UNet activation `[B·F, C, h, w]` held in pieces of whole frames, so that no tensor of a
//! large video exceeds a byte limit (a 720p refiner step holds `[16, 640, 90, 160]`, 590 MB in
//! f32, at its first level; WebGPU's default buffer is 256 MiB).
//!
//! Spatial layers (resnets, spatial transformers, samplers) see one frame at a time, so they run
//! on each piece. Temporal layers see one pixel at a time across the frames: they run on row
//! bands of every frame instead ([`FrameChunks::temporal`]), with their GroupNorm statistics
//! taken over all bands (`GroupNorm::forward_bands`). One piece is the whole tensor, and then
//! every layer runs exactly as without pieces.

use std::ops::Range;

use burn::tensor::Tensor;

/// The rows of the whole activation one piece holds, and the videos they belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rows {
    pub start: usize,
    pub len: usize,
    /// The videos (conditioning rows) of those rows: one, unless the piece is the whole batch.
    pub videos: Range<usize>,
}

impl Rows {
    /// These rows of a per-row tensor (`[B·F, …]`, e.g. the time embedding).
    pub fn of<const D: usize>(&self, x: &Tensor<D>) -> Tensor<D> {
        if self.start == 0 && self.len == x.dims()[0] { x.clone() } else { x.clone().narrow(0, self.start, self.len) }
    }

    /// These rows' videos of a per-video tensor (`[B, …]`, e.g. the cross-attention context).
    pub fn videos_of<const D: usize>(&self, x: &Tensor<D>) -> Tensor<D> {
        let Range { start, end } = self.videos;
        if start == 0 && end == x.dims()[0] { x.clone() } else { x.clone().narrow(0, start, end - start) }
    }
}

/// How one level of the UNet is split: see [`FrameChunks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Pieces per video (1 with `bands == 1`: the whole batch in one piece).
    pub pieces: usize,
    /// Row bands the temporal layers run in.
    pub bands: usize,
}

impl Split {
    pub const WHOLE: Self = Self { pieces: 1, bands: 1 };
}

/// `[B·F, C, h, w]` as pieces along the rows, each within one video unless there is one piece.
#[derive(Clone, Debug)]
pub struct FrameChunks {
    parts: Vec<Tensor<4>>,
    rows: Vec<Rows>,
    frames: usize,
    /// What the pieces were made by (a count of pieces may round down: 5 pieces of 16 frames
    /// are 4 runs of 4).
    split: Split,
}

impl FrameChunks {
    /// `x` (`[B·F, C, h, w]`, videos of `frames` frames) split as `split` says: each video's
    /// frames in `split.pieces` runs of `⌈F / pieces⌉` (the last shorter).
    pub fn new(x: Tensor<4>, frames: usize, split: Split) -> Self {
        let n = x.dims()[0];
        if split == Split::WHOLE {
            let rows = Rows { start: 0, len: n, videos: 0..n / frames };
            return Self { parts: vec![x], rows: vec![rows], frames, split };
        }
        let per_piece = frames.div_ceil(split.pieces.max(1));
        let rows: Vec<Rows> = (0..n / frames)
            .flat_map(|video| {
                (0..frames).step_by(per_piece).map(move |first| Rows {
                    start: video * frames + first,
                    len: per_piece.min(frames - first),
                    videos: video..video + 1,
                })
            })
            .collect();
        let parts = rows.iter().map(|r| r.of(&x)).collect();
        let split = Split { pieces: split.pieces.max(1), bands: split.bands.max(1) };
        Self { parts, rows, frames, split }
    }

    /// The whole tensor (a copy unless there is one piece).
    pub fn whole(self) -> Tensor<4> {
        if self.parts.len() == 1 {
            self.parts.into_iter().next().expect("one piece")
        } else {
            Tensor::cat(self.parts, 0)
        }
    }

    /// The same rows split as `split` says (unchanged when they already are).
    pub fn resplit(self, split: Split) -> Self {
        let frames = self.frames;
        if self.split() == split { self } else { Self::new(self.whole(), frames, split) }
    }

    /// How these rows are split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// `[B·F, C, h, w]` of the whole.
    pub fn dims(&self) -> [usize; 4] {
        let [_, c, h, w] = self.parts[0].dims();
        [self.rows.iter().map(|r| r.len).sum(), c, h, w]
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    /// A spatial layer on each piece.
    pub fn map(self, mut f: impl FnMut(Tensor<4>, &Rows) -> Tensor<4>) -> Self {
        let parts = self.parts.into_iter().zip(&self.rows).map(|(x, rows)| f(x, rows)).collect();
        Self { parts, ..self }
    }

    /// A spatial layer on each piece of `self` and the same piece of `other` (split alike).
    pub fn zip_map(self, other: Self, mut f: impl FnMut(Tensor<4>, Tensor<4>, &Rows) -> Tensor<4>) -> Self {
        assert_eq!(self.rows, other.rows, "pieces split alike");
        let parts = self.parts.into_iter().zip(other.parts).zip(&self.rows).map(|((x, y), rows)| f(x, y, rows));
        Self { parts: parts.collect(), ..self }
    }

    /// A temporal layer: `whole` on the whole tensor when it is one piece in one band, else
    /// `banded` on row bands of all the rows (`[B·F, C, rows, w]` each).
    pub fn temporal(
        self,
        whole: impl FnOnce(Tensor<4>) -> Tensor<4>,
        banded: impl FnOnce(Vec<Tensor<4>>) -> Vec<Tensor<4>>,
    ) -> Self {
        if self.split == Split::WHOLE {
            let parts = vec![whole(self.parts.into_iter().next().expect("one piece"))];
            return Self { parts, ..self };
        }
        let h = self.parts[0].dims()[2];
        let per_band = h.div_ceil(self.split.bands.min(h));
        let bands: Vec<Tensor<4>> = (0..h)
            .step_by(per_band)
            .map(|top| {
                let len = per_band.min(h - top);
                Tensor::cat(self.parts.iter().map(|x| x.clone().narrow(2, top, len)).collect(), 0)
            })
            .collect();
        let Self { parts, rows, frames, split } = self;
        drop(parts);
        let bands = banded(bands);
        let parts = rows.iter().map(|r| Tensor::cat(bands.iter().map(|band| r.of(band)).collect(), 2)).collect();
        Self { parts, rows, frames, split }
    }

    /// The rows of videos `videos` (a DeepCache feature of one conditioning row).
    pub fn videos(&self, videos: Range<usize>) -> Self {
        let (first, last) = (videos.start * self.frames, videos.end * self.frames);
        let mut out = Self { parts: vec![], rows: vec![], frames: self.frames, split: self.split };
        for (x, r) in self.parts.iter().zip(&self.rows) {
            let (start, end) = (r.start.max(first), (r.start + r.len).min(last));
            if start < end {
                let local = Rows { start: start - r.start, len: end - start, videos: 0..0 };
                out.parts.push(local.of(x));
                let v = (start / self.frames - videos.start)..((end - 1) / self.frames + 1 - videos.start);
                out.rows.push(Rows { start: start - first, len: end - start, videos: v });
            }
        }
        out
    }

    /// Videos one after the other (the inverse of [`Self::videos`]).
    pub fn cat(list: Vec<Self>) -> Self {
        let mut iter = list.into_iter();
        let mut out = iter.next().expect("at least one");
        for next in iter {
            let (rows, videos) = out.rows.last().map_or((0, 0), |r| (r.start + r.len, r.videos.end));
            if out.parts.len() == 1 && next.parts.len() == 1 {
                // Two whole batches stay one piece.
                let x = Tensor::cat(vec![out.parts.remove(0), next.parts.into_iter().next().expect("one")], 0);
                let n = x.dims()[0];
                out.rows = vec![Rows { start: 0, len: n, videos: 0..n / out.frames }];
                out.parts = vec![x];
                continue;
            }
            for (x, r) in next.parts.into_iter().zip(next.rows) {
                out.parts.push(x);
                out.rows.push(Rows {
                    start: r.start + rows,
                    len: r.len,
                    videos: r.videos.start + videos..r.videos.end + videos,
                });
            }
        }
        out
    }
}
