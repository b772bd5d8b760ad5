//! Predicted travel time of a unit to a place. Straight-line distance times
//! a road factor over the unit type's speed for now, behind [`TravelTime`]
//! so a routing engine can replace it without touching dispatch.
//!
//! Must stay cheap and pure: dispatch calls it for every candidate unit of
//! every event.

use bus::config::RouterConfig;
use bus::model::UnitType;

/// Estimates how long a unit of `unit_type` needs for `distance_m` of
/// straight line.
pub trait TravelTime: Send + Sync + std::fmt::Debug {
    fn eta_s(&self, unit_type: UnitType, distance_m: f64) -> u32;
}

/// Distance × road factor ÷ speed of the unit type.
#[derive(Debug, Clone)]
pub struct StraightLine {
    road_factor: f64,
    /// m/s per unit type, in `UnitType::ALL` order.
    speeds_mps: [f64; 5],
}

impl StraightLine {
    pub fn new(config: &RouterConfig) -> StraightLine {
        let speeds_mps = UnitType::ALL.map(|t| config.speed_kmh(t).max(0.1) / 3.6);
        StraightLine {
            road_factor: config.road_factor.max(1.0),
            speeds_mps,
        }
    }
}

impl TravelTime for StraightLine {
    fn eta_s(&self, unit_type: UnitType, distance_m: f64) -> u32 {
        let index = UnitType::ALL.iter().position(|t| *t == unit_type).unwrap_or(0);
        let seconds = distance_m.max(0.0) * self.road_factor / self.speeds_mps[index];
        seconds.ceil().min(f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::Config;

    #[test]
    fn a_car_beats_a_foot_patrol_over_the_same_distance() {
        let t = StraightLine::new(&Config::defaults().router);
        // 1 km × 1.4 at 30 km/h = 168 s; at 5 km/h = 1008 s.
        assert_eq!(t.eta_s(UnitType::PatrolCar, 1000.0), 168);
        assert_eq!(t.eta_s(UnitType::Foot, 1000.0), 1008);
        assert_eq!(t.eta_s(UnitType::PatrolCar, 0.0), 0);
    }
}
