//! Dice for the faults of a [`FaultPlan`].

use super::FaultPlan;
use super::rng::SplitMix64;

/// The faults one export request drew. Every die is cast on every request, so the sequence of
/// faults depends only on the plan's seed and the number of requests.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Roll {
    pub(crate) drop_connection: bool,
    pub(crate) too_many_requests: bool,
    pub(crate) server_error: bool,
    pub(crate) invalid_cursor: bool,
    pub(crate) gateway_timeout: bool,
    pub(crate) slow: bool,
}

pub(crate) struct FaultDice {
    pub(crate) plan: FaultPlan,
    rng: SplitMix64,
}

impl FaultDice {
    pub(crate) fn new(plan: FaultPlan) -> Self {
        let rng = SplitMix64::new(plan.seed);
        Self { plan, rng }
    }

    pub(crate) fn roll(&mut self) -> Roll {
        let plan = &self.plan;
        let rng = &mut self.rng;
        Roll {
            drop_connection: rng.chance(plan.drop_connection),
            too_many_requests: rng.chance(plan.too_many_requests),
            server_error: rng.chance(plan.server_error),
            invalid_cursor: rng.chance(plan.invalid_cursor),
            gateway_timeout: rng.chance(plan.gateway_timeout),
            slow: rng.chance(plan.slow),
        }
    }
}
