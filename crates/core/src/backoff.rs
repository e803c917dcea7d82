//! Restart delays: `min(initial_delay * multiplier^(n-1), max_delay)` for the
//! n-th consecutive restart, then spread by ±jitter so that services that
//! crashed together do not come back in lockstep.
//!
//! Randomness is a parameter (`unit`, uniform in `[0, 1)`), so the math is
//! tested exactly.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    /// 0.1 means ±10 %.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1-based) without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let max = self.max_delay.as_secs_f64();
        // NaN and infinities (huge exponents) collapse to the cap.
        let capped = if secs.is_finite() { secs.min(max) } else { max };
        Duration::from_secs_f64(capped.max(0.0))
    }

    /// The delay with jitter applied; `unit` is a uniform draw from `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let spread = self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * (1.0 + spread)).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::default();
        let secs: Vec<u64> = (1..=8).map(|n| b.base_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_spreads_symmetrically() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.5), Duration::from_secs(4));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs_f64(3.6));
        let high = b.delay(3, 0.999_999).as_secs_f64();
        assert!((high - 4.4).abs() < 1e-3, "{high}");
    }

    #[test]
    fn zero_initial_delay_means_immediate() {
        let b = Backoff {
            initial_delay: Duration::ZERO,
            ..Backoff::default()
        };
        assert_eq!(b.delay(7, 0.9), Duration::ZERO);
    }

    #[test]
    fn multiplier_one_is_constant() {
        let b = Backoff {
            multiplier: 1.0,
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(b.delay(20, 0.3), Duration::from_secs(1));
    }
}
