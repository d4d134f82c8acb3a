//! Checkpoint files: how weights and training state are stored, and read back.
//!
//! - [`atomic`]: the synced temporary file and rename that every file here is written through.
//! - [`safetensors`]: the crate's own format, with PyTorch `state_dict` keys, written atomically.
//! - [`state_dict`]: weights from either format, chosen by content (what every `--checkpoint`
//!   reads), and written in the format an extension names.
//! - [`training_checkpoint`]: PyTorch's `{'model', 'optimizer', 'epoch'}` training checkpoints,
//!   to continue a run on either side.
//! - [`pytorch`]: PyTorch's own `torch.save` files (`.pt`, `.pth`, `.bin`), read with a restricted
//!   unpickler that executes nothing, and written so that `torch.load` reads them.

pub mod atomic;
pub mod pytorch;
pub mod safetensors;
pub mod state_dict;
pub mod training_checkpoint;
