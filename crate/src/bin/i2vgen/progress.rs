//! The progress bar every long command shows: stage, i/N, elapsed and ETA.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} ({elapsed} elapsed, ETA {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
