//! What building or feeding a network can refuse, with the reason spelled out.

use tch::Kind;

use super::layers::LayerError;

/// Errors of the networks' construction and input checks.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A batch of the wrong shape: `network` names the model, `expected` the shapes it takes,
    /// `hint` (empty or starting with a space) what to do about it.
    #[error("{network} expects input of shape {expected}, got {got:?}{hint}")]
    InputShape { network: &'static str, expected: String, got: Vec<i64>, hint: &'static str },
    #[error("the network expects floating-point input, got {0:?}")]
    InputKind(Kind),
    #[error("num_classes must be at least 1, got {0}")]
    NumClasses(i64),
    #[error("unknown model `{0}` (known: {known})", known = super::ModelKind::NAMES.join(", "))]
    UnknownModel(String),
    #[error(transparent)]
    Layer(#[from] LayerError),
}
