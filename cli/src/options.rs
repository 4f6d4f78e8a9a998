//! The sandbox options `sandlot run` and `sandlot create` share.

use std::time::Duration;

use clap::Args;
use sandlot::{ExecLimits, SandboxOptions};

use crate::parse::{parse_duration, parse_env, parse_size};

/// What the sandbox is made of and may use.
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Template to start from (see `sandlot template ls`).
    #[arg(long, short, default_value = "base")]
    pub template: String,
    /// Lifetime of the sandbox, e.g. 30s, 5m, 1h, 500ms (default: the
    /// template's, or 5m).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Environment variable (repeatable): for `run` the command's, for
    /// `create` every command's in the sandbox.
    #[arg(long = "env", short, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Memory limit, swap included: bytes or 512K, 256M, 1G (binary units).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// CPU limit in CPUs, fractional (0.5 = half of one CPU's time).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Most processes and threads alive at once, init included.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Size of the writable layer (/tmp, /dev/shm and every change to the
    /// template's files), e.g. 100M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub disk: Option<u64>,
    /// Forward at most SIZE bytes of stdout and of stderr each; the rest is
    /// discarded (the command runs on).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_output: Option<u64>,
    /// Kill the command (its process group) after this long, e.g. 10s;
    /// exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub exec_timeout: Option<Duration>,
}

impl SandboxArgs {
    /// The options these flags ask for; the template's settings fill in
    /// every limit not given here.
    pub fn options(&self) -> SandboxOptions {
        let mut options = SandboxOptions::template(&self.template);
        if let Some(timeout) = self.timeout {
            options = options.timeout(timeout);
        }
        if let Some(memory) = self.memory {
            options.limits.memory = memory;
            options.explicit.memory = true;
        }
        if let Some(cpus) = self.cpus {
            options.limits.cpus = cpus;
            options.explicit.cpus = true;
        }
        if let Some(pids) = self.pids {
            options.limits.pids = pids;
            options.explicit.pids = true;
        }
        if let Some(disk) = self.disk {
            options = options.disk(disk);
        }
        options = options.exec_limits(ExecLimits {
            max_time: self.exec_timeout,
            max_output_bytes: self.max_output,
            max_concurrent: None,
        });
        for (key, value) in &self.env {
            options = options.env(key, value);
        }
        options
    }
}
