//! `Runtime::create_with_retry`: the reference's advice for creating
//! sandboxes reliably, as a library call — retry what can succeed on a
//! second try with exponential backoff and jitter, fall back to other
//! templates, check the new sandbox works before handing it out, and say
//! what went wrong with every attempt when none worked.

use std::time::Duration;

use crate::api::sandbox::Sandbox;
use crate::engine::error::{Attempt, Error, Result};
use crate::engine::options::SandboxOptions;
use crate::services::commands::RunOptions;
use crate::sys::process;

/// How [`Runtime::create_with_retry`](crate::Runtime::create_with_retry) tries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries per template (at least 1).
    pub attempts: u32,
    /// The pause before the second try; doubled for each try after it, up
    /// to `max_backoff`, and drawn at random between half and all of that
    /// ("equal jitter"), so that many callers retrying at once spread out.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Templates to try, in order, once the options' own template failed
    /// every try (or does not exist).
    pub fallback_templates: Vec<String>,
    /// Run a trivial command in each new sandbox and check its output
    /// before handing it out; a sandbox that fails it is destroyed and the
    /// try counts as failed.
    pub validate: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            fallback_templates: Vec::new(),
            validate: true,
        }
    }
}

impl RetryPolicy {
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max;
        self
    }

    pub fn fallback_template(mut self, template: impl Into<String>) -> Self {
        self.fallback_templates.push(template.into());
        self
    }

    pub fn validate(mut self, validate: bool) -> Self {
        self.validate = validate;
        self
    }

    /// The pause before try `n` (0-based; none before the first).
    fn pause(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let full = self
            .backoff
            .saturating_mul(1u32 << (n - 1).min(20))
            .min(self.max_backoff);
        let mut byte = [0u8; 1];
        let _ = process::random_bytes(&mut byte);
        full / 2 + full / 2 * u32::from(byte[0]) / 255
    }
}

/// Whether `error` can go away on another try (or another template): the
/// machine was busy, a setup step failed transiently, the sandbox or its
/// start command did not come up in time. Invalid options, missing
/// privileges or kernel features, a shut-down runtime: never.
pub(crate) fn retryable(error: &Error) -> bool {
    matches!(
        error,
        Error::ResourceUnavailable(_)
            | Error::QuotaExceeded { .. }
            | Error::Setup { .. }
            | Error::Io { .. }
            | Error::Protocol { .. }
            | Error::TimedOut(_)
            | Error::StartFailed { .. }
            | Error::Cgroup(_)
            | Error::SandboxNotRunning { .. }
            | Error::ValidationFailed { .. }
    )
}

/// What a new sandbox must answer to count as working.
const PROBE: &str = "echo sandlot-ok";
const PROBE_ANSWER: &str = "sandlot-ok\n";
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the trivial command; `ValidationFailed` unless it answers.
fn validate(sandbox: &Sandbox) -> Result<()> {
    let out = sandbox
        .commands()
        .run(PROBE, RunOptions::default().timeout(PROBE_TIMEOUT))?;
    if out.success() && out.stdout_str() == PROBE_ANSWER {
        return Ok(());
    }
    Err(Error::ValidationFailed {
        id: sandbox.id().to_string(),
        reason: format!(
            "{PROBE:?} gave {:?} (exit {:?}, stderr {:?})",
            out.stdout_str(),
            out.exit.code,
            out.stderr_str()
        ),
    })
}

/// `create` is the runtime's create (a parameter, so that this module
/// needs nothing of the runtime's).
pub(crate) fn create_with_retry(
    mut create: impl FnMut(SandboxOptions) -> Result<Sandbox>,
    options: SandboxOptions,
    policy: &RetryPolicy,
) -> Result<Sandbox> {
    let mut failures: Vec<Attempt> = Vec::new();
    let templates =
        std::iter::once(options.template.clone()).chain(policy.fallback_templates.iter().cloned());
    let mut tries = 0u32;
    for template in templates {
        let options = SandboxOptions {
            template: template.clone(),
            ..options.clone()
        };
        for _ in 0..policy.attempts.max(1) {
            std::thread::sleep(policy.pause(tries));
            tries += 1;
            let made = create(options.clone()).and_then(|sandbox| {
                if policy.validate {
                    if let Err(e) = validate(&sandbox) {
                        let _ = sandbox.kill();
                        return Err(e);
                    }
                }
                Ok(sandbox)
            });
            let error = match made {
                Ok(sandbox) => return Ok(sandbox),
                Err(e) => e,
            };
            let next_template =
                matches!(error, Error::TemplateNotFound(_) | Error::Template { .. });
            let give_up = !retryable(&error) && !next_template;
            failures.push(Attempt {
                template: template.clone(),
                error,
            });
            if give_up {
                return Err(Error::AllAttemptsFailed(failures));
            }
            if next_template {
                break;
            }
        }
    }
    Err(Error::AllAttemptsFailed(failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_maximum() {
        let policy =
            RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(policy.pause(0), Duration::ZERO);
        for (n, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..20 {
                let pause = policy.pause(n);
                assert!(pause >= full / 2 && pause <= full, "try {n}: {pause:?}");
            }
        }
    }

    #[test]
    fn only_what_can_pass_on_another_try_is_retried() {
        assert!(retryable(&Error::ResourceUnavailable("memory".into())));
        assert!(retryable(&Error::StartFailed {
            template: "t".into(),
            reason: "slow".into()
        }));
        assert!(!retryable(&Error::invalid("timeout", "zero")));
        assert!(!retryable(&Error::NotRoot { euid: 1000 }));
        assert!(!retryable(&Error::RuntimeShutDown));
    }
}
