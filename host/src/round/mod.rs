//! Rounds: one protocol, whoever the members are.
//!
//! - [`engine`]: the protocol as a deterministic state machine (events in, actions out,
//!   time passed in): joins, selection, answers, anonymisation, pairs, calibration,
//!   verdicts, the sealed transcript;
//! - [`judging`]: pair assignment, hidden calibration items, which verdicts count;
//! - [`calibration`]: the known-answer bank;
//! - [`settings`]: the one set of knobs both drivers use;
//! - [`local`]: the in-process driver, one folder's plugins as members
//!   (`apiary ask --plugins`, `apiary eval`).
//!
//! The libp2p driver is `crate::swarm::node`; it moves the same events and actions over
//! the network. Neither driver decides anything the engine does not: that is what lets a
//! local round and a networked round of the same members reach the same result.

pub mod calibration;
pub mod engine;
pub mod judging;
pub mod local;
pub mod settings;

pub use engine::{
    Action, Deadlines, Decision, Failure, MemberReport, Offer, Phase, Progress, Refused, Round,
    Spec,
};
pub use judging::{JudgeItem, JudgeTask};
pub use local::{AnswerEntry, Member, RoundConfig, RoundError, RoundReport, VerdictRecord};
pub use local::{request, run_local_round};
pub use settings::Settings;
