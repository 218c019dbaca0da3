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

/// The most device memory in use at any kernel launch of this thread while it lives: burn's
/// pool read as each kernel is issued (its output is allocated by then, and the inputs are still
/// alive), in order with the work before it. The pool reports what is in use only now, and what
/// it has reserved (pages kept once reserved, with their slack): this is the stage's true
/// high-water mark of live tensors, at kernel granularity.
#[must_use = "watching stops when the watcher is dropped"]
pub struct PeakMemory {
    peak: Arc<Peak>,
    _observation: LaunchObservation,
}

struct Peak {
    thread: ThreadId,
    device: burn::tensor::Device,
    bytes: Mutex<u64>,
}

impl LaunchObserver for Peak {
    fn launched(&self, _kernel: &'static str) {
        if std::thread::current().id() == self.thread
            && let Some(usage) = self.device.memory_pool_usage()
        {
            let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
            *bytes = (*bytes).max(usage.bytes_in_use);
        }
    }
}

impl PeakMemory {
    /// Start watching `device` from what is in use now.
    pub fn start(device: &burn::tensor::Device) -> Self {
        let now = device.memory_pool_usage().map_or(0, |usage| usage.bytes_in_use);
        let peak =
            Arc::new(Peak { thread: std::thread::current().id(), device: device.clone(), bytes: Mutex::new(now) });
        Self { _observation: LaunchObservation::new(peak.clone()), peak }
    }

    /// The most bytes in use since the start or the last `take`, and start again from what is in
    /// use now. (One watcher per run: cubecl keeps one observer, and dropping one restores the
    /// observer it replaced.)
    pub fn take(&self) -> u64 {
        let now = self.peak.device.memory_pool_usage().map_or(0, |usage| usage.bytes_in_use);
        let mut bytes = self.peak.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *bytes, now).max(now)
    }
}
