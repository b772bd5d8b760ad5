//! Open incidents by place: a grid of squares at least the linking reach
//! tall, so repeat linking looks only at the incidents near an event
//! instead of every open one. Holds ids only; never the incidents.

use std::collections::HashMap;

use bus::model::Incident;

/// Open incidents by grid square. Squares are at least `reach_m` tall; a
/// query covers enough squares east and west for the latitude.
#[derive(Debug, Clone)]
pub struct SpatialIndex {
    cell_deg: f64,
    reach_m: f64,
    cells: HashMap<(i64, i64), Vec<String>>,
    at: HashMap<String, (i64, i64)>,
}

impl SpatialIndex {
    pub fn new(reach_m: f64) -> SpatialIndex {
        let reach_m = reach_m.max(1.0);
        SpatialIndex {
            cell_deg: reach_m / METRES_PER_DEGREE,
            reach_m,
            cells: HashMap::new(),
            at: HashMap::new(),
        }
    }

    fn key(&self, lat: f64, lon: f64) -> (i64, i64) {
        (
            (lat / self.cell_deg).floor() as i64,
            (lon / self.cell_deg).floor() as i64,
        )
    }

    /// Indexes (or moves) an incident; one without a location is dropped
    /// from the index, as it cannot be linked by place.
    pub fn insert(&mut self, incident: &Incident) {
        self.remove(&incident.id);
        if let Some(loc) = &incident.location
            && loc.lat.is_finite()
            && loc.lon.is_finite()
        {
            let key = self.key(loc.lat, loc.lon);
            self.cells.entry(key).or_default().push(incident.id.clone());
            self.at.insert(incident.id.clone(), key);
        }
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(key) = self.at.remove(id)
            && let Some(ids) = self.cells.get_mut(&key)
        {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.cells.remove(&key);
            }
        }
    }

    pub fn clear(&mut self) {
        self.cells.clear();
        self.at.clear();
    }

    /// Ids of incidents within `reach_m` of the point (and some beyond).
    pub fn near(&self, lat: f64, lon: f64) -> impl Iterator<Item = &str> {
        let (row, col) = self.key(lat, lon);
        let lon_deg = self.reach_m / (METRES_PER_DEGREE * lat.to_radians().cos().abs().max(0.01));
        let span = (lon_deg / self.cell_deg).ceil().clamp(1.0, 1000.0) as i64;
        (row - 1..=row + 1)
            .flat_map(move |r| (col - span..=col + span).map(move |c| (r, c)))
            .filter_map(|k| self.cells.get(&k))
            .flatten()
            .map(String::as_str)
    }
}

/// Metres per degree of latitude (and of longitude at the equator).
pub(crate) const METRES_PER_DEGREE: f64 = 111_000.0;
