//! Checkpoint files: how weights and training state are stored, and read back.
//!
//! - [`safetensors`]: the crate's own format, with PyTorch `state_dict` keys, written atomically.
//! - [`pytorch`]: PyTorch's own `torch.save` files (`.pt`, `.pth`, `.bin`), read with a restricted
//!   unpickler that executes nothing, and written so that `torch.load` reads them.

pub mod pytorch;
pub mod safetensors;
