//! [`env_rank_info`]: this process's place in the job, from the environment variables that
//! torchrun (and `torch.distributed`'s `env://` initialisation) use.

use std::time::Duration;

use super::error::{DistError, Result};
use super::process_group::{Backend, ProcessGroupOptions};

/// This process's place in a job started by torchrun (or by hand, with the same variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankInfo {
    /// `RANK`: this process among all, `0..world_size`.
    pub rank: usize,
    /// `WORLD_SIZE`: the number of processes.
    pub world_size: usize,
    /// `LOCAL_RANK`: this process among those of its machine, the GPU it should use. Defaults
    /// to `RANK` when unset (one machine).
    pub local_rank: usize,
    /// `MASTER_ADDR`: where rank 0 hosts the store.
    pub master_addr: String,
    /// `MASTER_PORT`.
    pub master_port: u16,
}

impl RankInfo {
    /// The options of this rank's [`ProcessGroup`](super::ProcessGroup), on the backend's usual
    /// device ([`Backend::default_device`]: the CPU for Gloo, `cuda:LOCAL_RANK` for NCCL).
    pub fn process_group_options(&self, backend: Backend, timeout: Duration) -> ProcessGroupOptions {
        ProcessGroupOptions {
            rank: self.rank,
            world_size: self.world_size,
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
            timeout,
            backend,
            device: backend.default_device(self.local_rank),
        }
    }
}

/// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`. `None` when
/// `WORLD_SIZE` is unset (not a distributed run); an error naming the variable when one is
/// missing or malformed.
pub fn env_rank_info() -> Result<Option<RankInfo>> {
    rank_info_from(|name| std::env::var(name).ok())
}

/// [`env_rank_info`] on any source of variables (tests use a map: the process environment is
/// shared by every test thread).
pub fn rank_info_from(var: impl Fn(&str) -> Option<String>) -> Result<Option<RankInfo>> {
    let Some(world_size) = var("WORLD_SIZE") else {
        return Ok(None);
    };
    let world_size = parse_count("WORLD_SIZE", &world_size)?;
    if world_size == 0 {
        return Err(bad("WORLD_SIZE", "0", "the world needs at least one process"));
    }
    let required = |name: &'static str| {
        var(name)
            .ok_or_else(|| bad(name, "", &format!("unset, but WORLD_SIZE={world_size} asks for a distributed run")))
    };
    let rank = parse_count("RANK", &required("RANK")?)?;
    if rank >= world_size {
        return Err(bad("RANK", &rank.to_string(), &format!("ranks are 0..{world_size} (WORLD_SIZE={world_size})")));
    }
    let local_rank = match var("LOCAL_RANK") {
        Some(value) => parse_count("LOCAL_RANK", &value)?,
        None => rank,
    };
    let master_addr = required("MASTER_ADDR")?.trim().to_string();
    if master_addr.is_empty() {
        return Err(bad("MASTER_ADDR", "", "empty; it names the host of rank 0"));
    }
    let port_text = required("MASTER_PORT")?;
    let master_port = match port_text.trim().parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => return Err(bad("MASTER_PORT", &port_text, "not a port number (1 to 65535)")),
    };
    Ok(Some(RankInfo { rank, world_size, local_rank, master_addr, master_port }))
}

fn parse_count(name: &'static str, value: &str) -> Result<usize> {
    value.trim().parse::<usize>().map_err(|_| bad(name, value, "not a non-negative integer"))
}

fn bad(name: &'static str, value: &str, reason: &str) -> DistError {
    DistError::BadEnv { name, value: value.to_string(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn info(vars: &[(&str, &str)]) -> Result<Option<RankInfo>> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        rank_info_from(|name| map.get(name).cloned())
    }

    const FULL: [(&str, &str); 5] = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ];

    #[test]
    fn no_world_size_means_not_distributed() {
        assert_eq!(info(&[("RANK", "3")]).unwrap(), None);
    }

    #[test]
    fn torchrun_variables_are_read() {
        let got = info(&FULL).unwrap().unwrap();
        assert_eq!(
            got,
            RankInfo { rank: 1, world_size: 2, local_rank: 1, master_addr: "127.0.0.1".into(), master_port: 29500 }
        );
    }

    #[test]
    fn local_rank_defaults_to_rank() {
        let vars: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != "LOCAL_RANK").collect();
        assert_eq!(info(&vars).unwrap().unwrap().local_rank, 1);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value, expected) in [
            ("RANK", "2", "ranks are 0..2"),
            ("RANK", "-1", "not a non-negative integer"),
            ("WORLD_SIZE", "two", "not a non-negative integer"),
            ("WORLD_SIZE", "0", "at least one process"),
            ("MASTER_PORT", "70000", "not a port number"),
            ("MASTER_PORT", "0", "not a port number"),
            ("LOCAL_RANK", "x", "not a non-negative integer"),
            ("MASTER_ADDR", " ", "empty"),
        ] {
            let vars: Vec<_> = FULL.iter().map(|&(k, v)| if k == name { (k, value) } else { (k, v) }).collect();
            let message = info(&vars).unwrap_err().to_string();
            assert!(message.contains(name) && message.contains(expected), "{name}={value}: {message}");
        }
        for missing in ["RANK", "MASTER_ADDR", "MASTER_PORT"] {
            let vars: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != missing).collect();
            let message = info(&vars).unwrap_err().to_string();
            assert!(message.contains(missing) && message.contains("unset"), "{message}");
        }
    }
}
