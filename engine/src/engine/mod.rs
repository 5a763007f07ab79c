//! The engine thread and its API: callers (a plugin instance, the CLI) hold an [`Engine`],
//! submit [`Job`]s and follow them through a [`JobHandle`].
//!
//! * [`job`]: what is asked and answered (jobs, statuses, typed errors) — plain data;
//! * [`handle`]: the caller's side — the per-process registry, lock-free job status, cancel;
//! * `worker`: the thread that owns the [`crate::pipeline::Pipeline`] and runs jobs in order;
//! * [`compute`]: the threads a job computes on (how many, at which priority).

pub mod compute;
pub mod handle;
pub mod job;
mod worker;

pub use handle::{Engine, JobHandle, ModelChoice};
pub use job::{ControlParams, ControlSource, EditParams, Job, JobError, JobStatus, ModelStatus};
pub use worker::{load_pipeline, Loader};
