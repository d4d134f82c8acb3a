//! Checkpoint files: how weights and training state are stored, and read back.
//!
//! - [`safetensors`]: the crate's own format, with PyTorch `state_dict` keys, written atomically.

pub mod safetensors;
