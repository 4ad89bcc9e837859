//! Several conductors sharing one fleet (issue 17, docs/scale-plan.md §2).

pub mod hash_ring;
pub mod membership;

pub use membership::{Membership, MembershipConfig};
