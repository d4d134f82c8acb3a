//! PyTorch's default initialisation of `Conv2d` and `Linear`, and the int-or-pair sizes its
//! layers take.

use tch::nn;

/// PyTorch's default init for `Conv2d` and `Linear`: `kaiming_uniform_(a = sqrt(5))` for the
/// weight, which reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
/// (AlexNet's layers; [`kaiming_uniform_bound`] is the weight's bound to the last bit.)
pub fn torch_default_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// The weight bound of `kaiming_uniform_(w, a=math.sqrt(5))`, computed in `torch.nn.init`'s
/// steps (`gain = sqrt(2 / (1 + a²))`, `std = gain / sqrt(fan)`, `bound = sqrt(3) * std`), so
/// that it is PyTorch's float64 number exactly and not merely 1/sqrt(fan_in) mathematically.
pub fn kaiming_uniform_bound(fan_in: i64) -> f64 {
    let negative_slope = 5f64.sqrt();
    let gain = (2.0 / (1.0 + negative_slope * negative_slope)).sqrt();
    let std = gain / (fan_in as f64).sqrt();
    3f64.sqrt() * std
}

/// The bias bound of `Conv2d` and `Linear`: `1 / math.sqrt(fan_in)`.
pub fn bias_bound(fan_in: i64) -> f64 {
    1.0 / (fan_in as f64).sqrt()
}

/// U(-bound, bound), drawn as PyTorch's `tensor.uniform_(-bound, bound)`.
pub(super) fn symmetric_uniform(bound: f64) -> nn::Init {
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// A size PyTorch takes either as one int for both sides or as a pair `(h, w)`:
/// `3`, `[3, 1]` and `(3, 1)` all work.
pub trait IntOrPair: Copy {
    fn pair(self) -> [i64; 2];
}

impl IntOrPair for i64 {
    fn pair(self) -> [i64; 2] {
        [self, self]
    }
}

impl IntOrPair for [i64; 2] {
    fn pair(self) -> [i64; 2] {
        self
    }
}

impl IntOrPair for (i64, i64) {
    fn pair(self) -> [i64; 2] {
        [self.0, self.1]
    }
}

/// Setters `fn NAME(self, NAME: impl IntOrPair) -> Self` for `[i64; 2]` fields, one per field
/// named, each with its doc: PyTorch's int-or-tuple keyword arguments.
macro_rules! int_or_pair_setters {
    ($($(#[$doc:meta])* $field:ident),+ $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $field(self, $field: impl $crate::model::layers::IntOrPair) -> Self {
                Self { $field: $field.pair(), ..self }
            }
        )+
    };
}
pub(super) use int_or_pair_setters;
