//! Simulated time: real time since the start of the run times the speed
//! factor. `--speed 10` makes every wait of the simulator ten times shorter.
//!
//! Only the simulator's own waits follow this clock; the deployment's clocks
//! (the router's 1-3-5 deadlines) keep real time, which is why
//! [`crate::scaled_config`] exists. Built on tokio's clock, so tests with
//! `tokio::time::pause()` control it.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    origin: Instant,
    speed: f64,
}

impl SimClock {
    /// A clock starting now. A speed that is not a positive number is 1.
    pub fn start(speed: f64) -> SimClock {
        SimClock {
            origin: Instant::now(),
            speed: sane_speed(speed),
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        self.origin.elapsed().mul_f64(self.speed)
    }

    /// The real instant at which simulated time `at` is reached.
    pub fn instant_of(&self, at: Duration) -> Instant {
        self.origin + at.div_f64(self.speed)
    }

    /// Real time that `simulated` takes.
    pub fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.speed)
    }
}

pub(crate) fn sane_speed(speed: f64) -> f64 {
    if speed.is_finite() && speed > 0.0 { speed } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn simulated_time_runs_speed_times_faster() {
        let clock = SimClock::start(10.0);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.now().as_secs(), 30);
        assert_eq!(
            clock.instant_of(Duration::from_secs(60)) - clock.origin,
            Duration::from_secs(6)
        );
        assert_eq!(SimClock::start(-1.0).speed(), 1.0);
        assert_eq!(SimClock::start(f64::NAN).speed(), 1.0);
    }
}
