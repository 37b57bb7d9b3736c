//! Wire version 1, the one before this: what a node one version older sends and understands, so
//! that a cluster can be upgraded one node at a time.
//!
//! Version 1 had the same SWIM packets and the same core frames up to `SuspectCheck`, except
//! that its messages were typed by this crate (a health reset, a cache purge) where version 2
//! carries its user's bytes, and it had no durable state and no queries. So, between the two:
//! - membership (SWIM, joining, member lists, suspicion checks) works both ways;
//! - messages do not pass (neither side could read the other's); the digests sent to an older
//!   node are empty, so that neither asks the other for messages;
//! - durable state and queries stay among the newer nodes; an older node catches up on the
//!   state by push-pull once it is upgraded.

use serde::{Deserialize, Serialize};

use crate::{
    codec::{self, CodecError, CoreFrame, MembershipSummary},
    identity::NodeIdentity,
    messages::{Digest, MessageId, PullRequest},
};

/// Version 1's message: typed by this crate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum MessageV1 {
    TargetHealth { upstream: String, target: String, healthy: bool },
    CachePurge { key: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WireMessageV1 {
    id: MessageId,
    age_ms: u32,
    message: MessageV1,
}

/// Version 1's core frames, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum CoreFrameV1 {
    Hello { from: NodeIdentity },
    Welcome { from: NodeIdentity },
    Members(Vec<foca::Member<NodeIdentity>>),
    Push { messages: Vec<WireMessageV1>, relay: bool },
    Digest { messages: Digest, members: MembershipSummary, changes: Vec<foca::Member<NodeIdentity>> },
    Pull(PullRequest),
    SuspectCheck { target: NodeIdentity, incarnation: u16, from: NodeIdentity },
}

/// A version 1 core frame as this version's; none for its messages, which cannot be read here.
pub(crate) fn decode(payload: &[u8]) -> Result<Option<CoreFrame>, CodecError> {
    Ok(match codec::from_exact::<CoreFrameV1>(payload)? {
        CoreFrameV1::Hello { from } => Some(CoreFrame::Hello { from }),
        CoreFrameV1::Welcome { from } => Some(CoreFrame::Welcome { from }),
        CoreFrameV1::Members(members) => Some(CoreFrame::Members(members)),
        CoreFrameV1::Push { .. } => None,
        // Its messages cannot be read here: asking for them would be wasted.
        CoreFrameV1::Digest { members, changes, .. } => {
            Some(CoreFrame::Digest { messages: Digest::default(), members, changes })
        }
        CoreFrameV1::Pull(request) => Some(CoreFrame::Pull(request)),
        CoreFrameV1::SuspectCheck { target, incarnation, from } => {
            Some(CoreFrame::SuspectCheck { target, incarnation, from })
        }
    })
}

/// `frame` as version 1 encodes it; none for what version 1 does not have.
pub(crate) fn encode(frame: &CoreFrame) -> Option<Result<Vec<u8>, CodecError>> {
    let v1 = match frame {
        CoreFrame::Hello { from } => CoreFrameV1::Hello { from: from.clone() },
        CoreFrame::Welcome { from } => CoreFrameV1::Welcome { from: from.clone() },
        CoreFrame::Members(members) => CoreFrameV1::Members(members.clone()),
        CoreFrame::Digest { members, changes, .. } => {
            CoreFrameV1::Digest { messages: Digest::default(), members: *members, changes: changes.clone() }
        }
        CoreFrame::Pull(request) => CoreFrameV1::Pull(request.clone()),
        CoreFrame::SuspectCheck { target, incarnation, from } => {
            CoreFrameV1::SuspectCheck { target: target.clone(), incarnation: *incarnation, from: from.clone() }
        }
        CoreFrame::Push { .. }
        | CoreFrame::State { .. }
        | CoreFrame::StateDigest(_)
        | CoreFrame::StateWant(_)
        | CoreFrame::Query { .. }
        | CoreFrame::Answer { .. } => return None,
    };
    Some(codec::to_vec(&v1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> NodeIdentity {
        NodeIdentity::new(name, "127.0.0.1:7946".parse().unwrap(), 1, 2)
    }

    #[test]
    fn frames_both_versions_have_read_alike_and_the_rest_is_left_out() {
        let hello = CoreFrame::Hello { from: id("a") };
        let bytes = encode(&hello).unwrap().unwrap();
        assert_eq!(bytes, codec::to_vec(&hello).unwrap(), "version 1 encoded its hello the same way");
        assert_eq!(decode(&bytes).unwrap(), Some(hello));
        assert!(encode(&CoreFrame::StateWant(vec![1])).is_none());
        assert!(encode(&CoreFrame::Push { messages: vec![], relay: true }).is_none());
        // A version 1 push (a health reset) is read, and left out.
        let push = CoreFrameV1::Push {
            messages: vec![WireMessageV1 {
                id: MessageId { origin: "old".into(), boot: 1, seq: 1 },
                age_ms: 5,
                message: MessageV1::TargetHealth { upstream: "u".into(), target: "t:80".into(), healthy: false },
            }],
            relay: true,
        };
        assert_eq!(decode(&codec::to_vec(&push).unwrap()).unwrap(), None);
        assert!(decode(&[200, 1, 2]).is_err());
    }
}
