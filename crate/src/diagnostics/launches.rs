//! Kernel launches as cubecl issues them, counted through its launch observer
//! (`cubecl_runtime::logging::LaunchObserver`, called on the issuing thread before each submit):
//! the measured side of the dispatch counter that [`super::kernels`] computes from the shapes.
//! Native only: the observer is reached through burn's `cubecl` feature, which the wasm build
//! leaves off.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use burn::cubecl::config::{TypeNameFormatLevel, type_name_format};
use burn::cubecl::logging::{LaunchObservation, LaunchObserver};

/// The kernels one thread launched, in order.
struct Tally {
    thread: ThreadId,
    launched: Mutex<Vec<&'static str>>,
}

impl LaunchObserver for Tally {
    fn launched(&self, kernel: &'static str) {
        // The observer is process-wide; other threads (parallel tests) launch too.
        if std::thread::current().id() == self.thread {
            self.launched.lock().unwrap_or_else(PoisonError::into_inner).push(kernel);
        }
    }
}

/// Counts the kernels this thread launches on any cubecl device while it lives.
#[must_use = "counting stops when the counter is dropped"]
pub struct LaunchCounter {
    tally: Arc<Tally>,
    _observation: LaunchObservation,
}

impl LaunchCounter {
    pub fn start() -> Self {
        let tally = Arc::new(Tally { thread: std::thread::current().id(), launched: Mutex::default() });
        Self { _observation: LaunchObservation::new(tally.clone()), tally }
    }

    /// The kernels launched so far, in order, each named by cubecl's short form of its type name
    /// (`MatmulEntry`, `KernelBinop`, ...).
    pub fn sequence(&self) -> Vec<String> {
        let launched = self.tally.launched.lock().unwrap_or_else(PoisonError::into_inner);
        launched.iter().map(|kernel| type_name_format(kernel, TypeNameFormatLevel::Short)).collect()
    }

    /// Launches so far per kernel name.
    pub fn by_kernel(&self) -> BTreeMap<String, u64> {
        let mut named = BTreeMap::new();
        for kernel in self.sequence() {
            *named.entry(kernel).or_default() += 1;
        }
        named
    }
}
