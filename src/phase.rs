//! The phases of a request in which Kong runs an external plugin's handler
//! (docs/protocol.md §1.4, §5.4). Shared by the RPC side, the PDK table and
//! the executors, and depending on none of them.

/// The phases an external plugin can implement (docs/protocol.md §1.4, §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Certificate,
    Rewrite,
    Access,
    Response,
    Preread,
    Log,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Certificate,
        Phase::Rewrite,
        Phase::Access,
        Phase::Response,
        Phase::Preread,
        Phase::Log,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Certificate => "certificate",
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Response => "response",
            Phase::Preread => "preread",
            Phase::Log => "log",
        }
    }

    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether Kong can still send a response when the handler fails: a
    /// failing handler then ends the request with a 500, like a Lua plugin.
    pub fn can_respond(self) -> bool {
        matches!(self, Phase::Rewrite | Phase::Access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_parses_back_from_its_name() {
        for phase in Phase::ALL {
            assert_eq!(Phase::parse(phase.name()), Some(phase));
        }
        let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "certificate",
                "rewrite",
                "access",
                "response",
                "preread",
                "log"
            ]
        );
    }

    #[test]
    fn unknown_or_differently_spelt_names_are_not_phases() {
        for name in [
            "",
            "Access",
            "ACCESS",
            "header_filter",
            "body_filter",
            "init_worker",
            "access ",
        ] {
            assert_eq!(Phase::parse(name), None, "{name:?}");
        }
    }

    #[test]
    fn only_rewrite_and_access_can_still_respond() {
        let responding: Vec<Phase> = Phase::ALL.into_iter().filter(|p| p.can_respond()).collect();
        assert_eq!(responding, [Phase::Rewrite, Phase::Access]);
    }
}
