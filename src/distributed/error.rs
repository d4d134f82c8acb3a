//! [`DistError`]: what can go wrong in distributed training, each with what to do about it and
//! c10d's own message at the end.

/// A distributed failure. c10d's message comes last in each, as it is (it names the socket,
/// the key or the peer address involved).
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("this build has no Gloo (install libgloo-dev, e.g. scripts/setup does it, and rebuild)")]
    GlooUnavailable,
    #[error(
        "this build has no NCCL (building it needs libtorch_cuda.so, nccl.h and the CUDA toolkit's headers; \
         see build.rs)"
    )]
    NcclUnavailable,
    #[error("invalid distributed settings: {0}")]
    InvalidOptions(String),
    #[error(
        "environment variable {name}={value:?}: {reason} (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR \
         and MASTER_PORT)"
    )]
    BadEnv { name: &'static str, value: String, reason: String },
    #[error(
        "port {port} is already in use, so rank 0 cannot host the rendezvous at {addr}:{port} (another job, or a \
         rank 0 of an earlier run still alive? choose another MASTER_PORT): {message}"
    )]
    PortInUse { addr: String, port: u16, message: String },
    #[error(
        "cannot reach the master at {addr}:{port} within {timeout} (is rank 0 running, and do all ranks have the \
         same MASTER_ADDR and MASTER_PORT?): {message}"
    )]
    MasterUnreachable { addr: String, port: u16, timeout: String, message: String },
    #[error(
        "rank {rank}: not all {world_size} ranks joined the rendezvous at {addr}:{port} within {timeout} (were \
         they all started, with the same WORLD_SIZE?): {message}"
    )]
    RendezvousTimeout { rank: usize, world_size: usize, addr: String, port: u16, timeout: String, message: String },
    #[error("{op} on rank {rank} of {world_size}: {peer} closed its connection (it may have died): {message}")]
    PeerLost { op: String, rank: usize, world_size: usize, peer: String, message: String },
    #[error(
        "{op} on rank {rank} of {world_size}: {peer} did not answer within {timeout} (it may have died or \
         stalled): {message}"
    )]
    Timeout { op: String, rank: usize, world_size: usize, peer: String, timeout: String, message: String },
    #[error("{op} on rank {rank} of {world_size} failed: {message}")]
    Failed { op: String, rank: usize, world_size: usize, message: String },
    #[error("{what}: {reason}")]
    BadTensor { what: String, reason: String },
    #[error(
        "{what}: the tensor is on {found}, but this {backend} process group's collectives run on {expected} (each \
         rank's group is declared for the device it trains on; move the tensor there first)"
    )]
    WrongDevice { what: String, found: String, expected: String, backend: super::Backend },
}

pub type Result<T, E = DistError> = std::result::Result<T, E>;
