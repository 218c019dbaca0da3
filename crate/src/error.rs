//! The library's one error type. Every message is a sentence that names what is wrong and, where
//! it helps, what to do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A `config.json` (or tokenizer/scheduler file) that cannot be used.
    #[error("{file}: {message}")]
    Config { file: String, message: String },

    /// A weight the network needs is not in the checkpoint.
    #[error("the checkpoint has no tensor `{key}` (expected shape {shape:?}); is this the right model folder?")]
    MissingWeight { key: String, shape: Vec<usize> },

    /// The checkpoint holds tensors the network does not use.
    #[error("the checkpoint has tensors the network does not use: {}", keys.join(", "))]
    UnusedWeights { keys: Vec<String> },

    /// A weight whose shape differs from the one the config implies.
    #[error("tensor `{key}` has shape {found:?} but the config implies {expected:?}")]
    WeightShape { key: String, expected: Vec<usize>, found: Vec<usize> },

    /// A safetensors file that cannot be read, or a dtype we do not load.
    #[error("{0}")]
    Safetensors(String),

    /// Bad input from the caller (sizes, counts, ranges): checked up front like diffusers' `check_inputs`.
    #[error("{0}")]
    Request(String),
}

pub type Result<T> = std::result::Result<T, Error>;
