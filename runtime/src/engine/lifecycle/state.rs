use std::fmt;

/// Where a sandbox is in its life.
///
/// ```text
/// Pending ──► Starting ──► Running ⇄ Active
///    │            │           │  ╲   │
///    ▼            ▼           │   Paused
///  Failed       Error         │     │
///                             ▼     ▼
///                          Stopping ──► Destroyed  (from every live state)
/// ```
/// `Running` means idle; `Active` means at least one command is in flight.
/// `Stopping`: `stop(grace)` is draining it — no new commands, its
/// processes have had SIGTERM and get SIGKILL at the end of the grace.
/// `Failed` (rejected before anything was built) and `Destroyed` are
/// terminal. `Error` means the runtime failed the sandbox: from `Starting`
/// (setup failed and was rolled back; nothing follows) or, from a live
/// state, when serving it failed (`Destroyed` follows once it is torn
/// down; the other sandboxes are unaffected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Starting,
    Running,
    Active,
    Paused,
    Stopping,
    Error,
    Failed,
    Destroyed,
}

impl State {
    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Pending, Starting)
                | (Pending, Failed)
                | (Starting, Running)
                | (Starting, Error)
                | (Starting, Destroyed)
                | (Running, Error)
                | (Active, Error)
                | (Paused, Error)
                | (Error, Destroyed)
                | (Running, Active)
                | (Active, Running)
                | (Running, Paused)
                | (Active, Paused)
                | (Paused, Running)
                | (Paused, Active)
                | (Running, Destroyed)
                | (Active, Destroyed)
                | (Paused, Destroyed)
                | (Running, Stopping)
                | (Active, Stopping)
                | (Paused, Stopping)
                | (Stopping, Error)
                | (Stopping, Destroyed)
        )
    }

    /// A sandbox in a live state holds kernel resources.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            State::Starting | State::Running | State::Active | State::Paused | State::Stopping
        )
    }

    /// Commands may be started.
    pub fn accepts_commands(self) -> bool {
        matches!(self, State::Running | State::Active)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Failed | State::Destroyed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Starting => "starting",
            State::Running => "running",
            State::Active => "active",
            State::Paused => "paused",
            State::Stopping => "stopping",
            State::Error => "error",
            State::Failed => "failed",
            State::Destroyed => "destroyed",
        }
    }
}

impl std::str::FromStr for State {
    type Err = String;

    /// The names [`State::as_str`] gives.
    fn from_str(s: &str) -> Result<State, String> {
        use State::*;
        [
            Pending, Starting, Running, Active, Paused, Stopping, Error, Failed, Destroyed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| {
            format!("unknown state {s:?} (pending, starting, running, active, paused, stopping, error, failed, destroyed)")
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::State::{self, *};

    const ALL: [State; 9] = [
        Pending, Starting, Running, Active, Paused, Stopping, Error, Failed, Destroyed,
    ];

    #[test]
    fn terminal_states_are_final() {
        for from in [Failed, Destroyed] {
            for to in ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be illegal");
            }
        }
    }

    #[test]
    fn every_live_state_can_be_destroyed_and_nothing_skips_starting() {
        for from in ALL.into_iter().filter(|s| s.is_live()) {
            assert!(from.can_become(Destroyed), "{from} -> destroyed");
        }
        assert!(!Pending.can_become(Running));
        assert!(!Pending.can_become(Destroyed));
        assert!(!Running.can_become(Starting));
        assert!(!Destroyed.can_become(Running));
        assert!(!Error.can_become(Running));
        assert!(!Pending.can_become(Error));
    }

    #[test]
    fn states_parse_from_their_names() {
        for state in ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert!("frozen".parse::<State>().is_err());
    }

    #[test]
    fn stopping_is_one_way_and_takes_no_commands() {
        for from in [Running, Active, Paused] {
            assert!(from.can_become(Stopping), "{from} -> stopping");
        }
        for to in ALL {
            let legal = matches!(to, Destroyed | Error);
            assert_eq!(Stopping.can_become(to), legal, "stopping -> {to}");
        }
        assert!(!Starting.can_become(Stopping));
        assert!(Stopping.is_live());
        assert!(!Stopping.accepts_commands());
    }
}
