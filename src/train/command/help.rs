//! `--help` with the defaults of the program's base settings: a recipe's values are only known
//! at run time (and differ per recipe), so they are written into each flag's help here rather
//! than as clap's static `default_value`s.

use clap::Command;

use crate::train::config::TrainConfig;

/// The flags whose default is a base setting, with that setting's value as `--help` shows it.
fn default_values(config: &TrainConfig) -> Vec<(&'static str, String)> {
    let schedule = &config.schedule;
    vec![
        ("epochs", config.epochs.to_string()),
        ("batch_size", config.batch_size.to_string()),
        ("eval_batch_size", config.eval_batch_size().to_string()),
        ("optimizer", format!("{:?}", config.optimizer).to_lowercase()),
        ("lr", config.lr.to_string()),
        ("momentum", config.momentum.to_string()),
        ("weight_decay", config.weight_decay.to_string()),
        ("schedule", schedule.decay.to_string()),
        ("label_smoothing", config.label_smoothing.to_string()),
        ("valid_size", config.valid_size.to_string()),
        ("test_every_epoch", if config.test_every_epoch { "on" } else { "off" }.to_string()),
        ("seed", config.seed.to_string()),
        ("split_rng", config.split_rng.name().to_string()),
    ]
}

/// `command` with `[default: V]` added to the help of every flag of [`default_values`]: the
/// value of the first of `bases`, and where the others differ, theirs by name
/// (`[default: 20; resnet18-cifar: 200]`).
pub fn with_defaults(mut command: Command, bases: &[(&str, &TrainConfig)]) -> Command {
    let Some((_, first)) = bases.first() else { return command };
    let first_values = default_values(first);
    for (i, (id, value)) in first_values.iter().enumerate() {
        let others: Vec<String> = bases[1..]
            .iter()
            .filter_map(|(name, base)| {
                let theirs = &default_values(base)[i].1;
                (theirs != value).then(|| format!("{name}: {theirs}"))
            })
            .collect();
        let text = if others.is_empty() {
            format!("[default: {value}]")
        } else {
            format!("[default: {value}; {}]", others.join(", "))
        };
        command = command.mut_arg(*id, |arg| {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let long = arg.get_long_help().map(|h| h.to_string()).unwrap_or_else(|| help.clone());
            arg.help(format!("{help} {text}")).long_help(format!("{long} {text}"))
        });
    }
    command
}
