//! From files to networks: config parsing, strict weight loading, converted shards, the
//! tokenizer's vocabulary files.

pub mod config;
pub mod folder;
pub mod manifest;
pub mod tokenizer;
pub mod weights;
