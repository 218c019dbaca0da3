//! The library's one error type. Every message is a sentence that names what is wrong and, where
//! it helps, what to do; each variant carries the file, key or field it is about.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A `config.json` (or tokenizer, scheduler, manifest or index file) that cannot be used.
    #[error("{file}: {message}")]
    Config { file: String, message: String },

    /// A file (or, ending in `/`, a component folder) the model needs is not there.
    #[error("the model has no {path}{}; is this the right model folder?", if path.ends_with('/') { " folder" } else { "" })]
    MissingFile { path: String },

    /// A file of the model folder that exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    File { path: String, source: std::io::Error },

    /// A component folder with no weights in a format we read.
    #[error(
        "no diffusion_pytorch_model.safetensors or model.safetensors (or a sharded \
         *.safetensors.index.json) in the component folder; download the safetensors weights"
    )]
    NoWeightFiles,

    /// An error while building one component (`unet`, `vae`, …).
    #[error("{component}: {source}")]
    Component { component: String, source: Box<Error> },

    /// A weight the network needs is not in the checkpoint.
    #[error("the checkpoint has no tensor `{key}` (expected shape {shape:?}); is this the right model folder?")]
    MissingWeight { key: String, shape: Vec<usize> },

    /// The checkpoint holds tensors the network does not use.
    #[error("the checkpoint has tensors the network does not use: {}", keys.join(", "))]
    UnusedWeights { keys: Vec<String> },

    /// A weight whose shape differs from the one the config implies.
    #[error("tensor `{key}` has shape {found:?} but the config implies {expected:?}")]
    WeightShape { key: String, expected: Vec<usize>, found: Vec<usize> },

    /// A file that is not valid safetensors.
    #[error("{file} is not a valid safetensors file: {source}")]
    Safetensors { file: String, source: safetensors::SafeTensorError },

    /// A tensor whose bytes or dtype cannot be used.
    #[error("tensor `{key}`: {message}")]
    Tensor { key: String, message: String },

    /// Bad input from the caller (sizes, counts, ranges): checked up front like diffusers'
    /// `check_inputs`. `field` names the request field at fault.
    #[error("{message}")]
    Request { field: &'static str, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A bad request field, with its sentence.
    pub fn request(field: &'static str, message: impl Into<String>) -> Self {
        Self::Request { field, message: message.into() }
    }
}
