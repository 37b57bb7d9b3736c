//! Confirming a suspicion before foca declares a member down.
//!
//! In SWIM, the member whose probe failed marks the target suspect and declares it down when the
//! suspicion times out, unless the target's refutation (a higher incarnation) reached it first.
//! foca 2.0 has two traps there, both ending in a live member being told it is down (foca's
//! `TurnUndead`, sent because `notify_down_members` is on) and rejoining under a new identity:
//!
//! 1. When the `ChangeSuspectToDown` timer fires after the member *did* refute, foca correctly
//!    leaves it alive, but still sends it a `TurnUndead` (it checks that the member exists, not
//!    that the declaration happened). The simulation showed this as rejoins with no member ever
//!    declared down, several per 10 minutes at 50 nodes and 5% loss.
//! 2. When the refutation reached everyone but the prober (loss), the prober's verdict wins
//!    everywhere: foca treats *down* as final whatever the incarnation.
//!
//! So this node never hands foca a `ChangeSuspectToDown` timer for a member that is no longer
//! suspect at that incarnation: it drops it (closing trap 1; nothing else in foca depends on it).
//! For a member still suspect, it first asks the member directly ([`CoreFrame::SuspectCheck`], two
//! copies), up to [`CONFIRM_ATTEMPTS`] times `probe_rtt / 2` apart. A live member answers by applying the
//! suspicion to itself (refuting it if it had not yet) and announcing itself to the asker, which
//! carries its new incarnation, and the timer is then dropped (closing trap 2 but for the rare
//! case where all attempts are lost too). Only a member that stays silent is declared down.
//! `notify_down_members` stays on, so a member that *was* rightly declared down while alive (a
//! partition, a long pause) learns it at its next message and rejoins at once.

use std::time::Instant;

use foca::{Identity, Timer};
use tracing::debug;

use super::{Node, NodeTimer, Output, SwimRuntime, TimerKind};
use crate::{codec::CoreFrame, identity::NodeIdentity};

/// Direct questions a suspect gets before it is declared down.
pub const CONFIRM_ATTEMPTS: u8 = 3;

impl Node {
    /// Called when foca's `ChangeSuspectToDown` timer is due (`attempt` 0) and for each retry.
    pub(super) fn confirm_or_declare(
        &mut self,
        timer: Timer<NodeIdentity>,
        attempt: u8,
        now: Instant,
        out: &mut Output,
    ) {
        if let Timer::ChangeSuspectToDown { member_id, incarnation, .. } = &timer {
            let still_suspect = self.foca.iter_membership_state().any(|member| {
                member.id() == member_id
                    && member.state() == foca::State::Suspect
                    && member.incarnation() == *incarnation
            });
            if !still_suspect {
                // Refuted (or replaced, or already down): foca would find nothing to declare, yet
                // still send the member a TurnUndead, making it rejoin. Drop the timer instead.
                return;
            }
            if attempt < CONFIRM_ATTEMPTS {
                if attempt == 0 {
                    debug!(member = member_id.node(), "suspect did not refute in time; asking it directly");
                }
                let check = CoreFrame::SuspectCheck {
                    target: member_id.clone(),
                    incarnation: *incarnation,
                    from: self.foca.identity().clone(),
                };
                // Twice: under loss one attempt then fails only if both checks or both answers
                // are lost (at 10% loss, 4% instead of 19%), and a live member answers twice
                // at most.
                self.send_frame(member_id.socket(), &check, out);
                self.send_frame(member_id.socket(), &check, out);
                let retry = NodeTimer(TimerKind::Confirm { timer, attempt: attempt + 1 });
                out.timers.push((self.settings.confirm_interval, retry));
                return;
            }
        }
        if let Err(error) = self.foca.handle_timer(timer, runtime!(self, out)) {
            debug!(%error, "foca timer");
        }
        self.process_notes(now, out);
    }

    /// Answers a [`CoreFrame::SuspectCheck`]: refutes the suspicion if it is about this node (foca
    /// bumps the incarnation and gossips it), then announces to the checker, which carries the
    /// current incarnation (or this node's newer identity) there directly.
    pub(super) fn answer_suspect_check(
        &mut self,
        target: NodeIdentity,
        incarnation: u16,
        checker: NodeIdentity,
        now: Instant,
        out: &mut Output,
    ) {
        let me = self.foca.identity().clone();
        if target.addr() != me.addr() || checker.node() == me.node() {
            return;
        }
        if target == me {
            let suspicion = foca::Member::new(me, incarnation, foca::State::Suspect);
            let _ = self.foca.apply_many(std::iter::once(suspicion), true, runtime!(self, out));
        }
        if let Err(error) = self.foca.announce(checker, runtime!(self, out)) {
            debug!(%error, "answering a suspicion check");
        }
        self.process_notes(now, out);
    }
}
