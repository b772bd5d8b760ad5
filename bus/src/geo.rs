//! Geography of the city: distances, which jurisdiction a point is in, and
//! its grid cell (H3, via `h3o`). Pure functions over the configuration;
//! nothing here does IO.

use h3o::{CellIndex, LatLng, Resolution};

use crate::config::{Config, Jurisdiction};

const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

/// Ray casting over `[lat, lon]` vertices; fine for station-sized polygons.
pub fn point_in_polygon(lat: f64, lon: f64, polygon: &[[f64; 2]]) -> bool {
    let mut inside = false;
    let mut j = polygon.len().wrapping_sub(1);
    for i in 0..polygon.len() {
        let [yi, xi] = polygon[i];
        let [yj, xj] = polygon[j];
        if (yi > lat) != (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Centroid of a polygon's vertices (area-weighted), `[lat, lon]`.
pub fn polygon_centroid(polygon: &[[f64; 2]]) -> Option<[f64; 2]> {
    match polygon.len() {
        0 => None,
        1 | 2 => {
            let n = polygon.len() as f64;
            let lat = polygon.iter().map(|p| p[0]).sum::<f64>() / n;
            let lon = polygon.iter().map(|p| p[1]).sum::<f64>() / n;
            Some([lat, lon])
        }
        _ => {
            let (mut area2, mut cy, mut cx) = (0.0, 0.0, 0.0);
            for i in 0..polygon.len() {
                let [y0, x0] = polygon[i];
                let [y1, x1] = polygon[(i + 1) % polygon.len()];
                let cross = x0 * y1 - x1 * y0;
                area2 += cross;
                cx += (x0 + x1) * cross;
                cy += (y0 + y1) * cross;
            }
            if area2.abs() < 1e-12 {
                // Degenerate (all points on a line): the mean will do.
                return polygon_centroid(&polygon[..2]);
            }
            Some([cy / (3.0 * area2), cx / (3.0 * area2)])
        }
    }
}

/// The grid cell of a point at a resolution, as H3's hex string.
pub fn cell_of(lat: f64, lon: f64, resolution: u8) -> Option<String> {
    let resolution = Resolution::try_from(resolution).ok()?;
    let point = LatLng::new(lat, lon).ok()?;
    Some(point.to_cell(resolution).to_string())
}

/// Centre `[lat, lon]` of a cell given as hex.
pub fn cell_centre(cell: &str) -> Option<[f64; 2]> {
    let index: CellIndex = cell.parse().ok()?;
    let centre = LatLng::from(index);
    Some([centre.lat(), centre.lng()])
}

/// The outline of a cell, `[lat, lon]` vertices, for drawing.
pub fn cell_boundary(cell: &str) -> Option<Vec<[f64; 2]>> {
    let index: CellIndex = cell.parse().ok()?;
    Some(index.boundary().iter().map(|p| [p.lat(), p.lng()]).collect())
}

/// Which jurisdiction a point falls in, and its cell, from the configured
/// city. Built once per service.
#[derive(Debug, Clone)]
pub struct CityMap {
    jurisdictions: Vec<Jurisdiction>,
    fallback: String,
    resolution: u8,
}

/// Where a point was placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub jurisdiction: String,
    /// False when the point is outside every station area and was given to
    /// the fallback jurisdiction.
    pub inside: bool,
    pub cell: Option<String>,
}

impl CityMap {
    pub fn new(config: &Config) -> CityMap {
        CityMap {
            jurisdictions: config.city.jurisdictions.clone(),
            fallback: config.city.fallback_jurisdiction.clone(),
            resolution: config.city.h3_resolution,
        }
    }

    pub fn fallback(&self) -> &str {
        &self.fallback
    }

    pub fn resolution(&self) -> u8 {
        self.resolution
    }

    /// The station area containing the point, else the fallback.
    pub fn place(&self, lat: f64, lon: f64) -> Placement {
        let found = self
            .jurisdictions
            .iter()
            .find(|j| !j.area.is_empty() && point_in_polygon(lat, lon, &j.area));
        Placement {
            jurisdiction: found.map_or_else(|| self.fallback.clone(), |j| j.id.clone()),
            inside: found.is_some(),
            cell: cell_of(lat, lon, self.resolution),
        }
    }

    /// A jurisdiction named in free text (an alert's area description):
    /// its id, Chinese or English name. Else the fallback.
    pub fn place_by_name(&self, text: &str) -> Placement {
        let lower = text.to_lowercase();
        let found = self.jurisdictions.iter().find(|j| {
            j.id != self.fallback
                && (text.contains(&j.name) || lower.contains(&j.name_en.to_lowercase()) || lower.contains(&j.id))
        });
        Placement {
            jurisdiction: found.map_or_else(|| self.fallback.clone(), |j| j.id.clone()),
            inside: found.is_some(),
            cell: None,
        }
    }

    /// Every cell whose centre lies in some station area: the grid the
    /// coverage map is drawn on.
    pub fn cells(&self) -> Vec<String> {
        let areas: Vec<&Vec<[f64; 2]>> = self
            .jurisdictions
            .iter()
            .filter(|j| !j.area.is_empty())
            .map(|j| &j.area)
            .collect();
        let points = areas.iter().flat_map(|a| a.iter());
        let (mut min_lat, mut max_lat, mut min_lon, mut max_lon) = (90.0f64, -90.0f64, 180.0f64, -180.0f64);
        for [lat, lon] in points {
            min_lat = min_lat.min(*lat);
            max_lat = max_lat.max(*lat);
            min_lon = min_lon.min(*lon);
            max_lon = max_lon.max(*lon);
        }
        if min_lat > max_lat {
            return Vec::new();
        }
        // Sample well below the cell size so no cell is skipped.
        let edge_m = Resolution::try_from(self.resolution)
            .map(|r| r.edge_length_m())
            .unwrap_or(500.0);
        let step_lat = (edge_m / 4.0) / 111_320.0;
        let step_lon = step_lat / min_lat.to_radians().cos().max(0.1);
        let mut cells = std::collections::BTreeSet::new();
        let mut lat = min_lat;
        while lat <= max_lat {
            let mut lon = min_lon;
            while lon <= max_lon {
                if let Some(cell) = cell_of(lat, lon, self.resolution)
                    && let Some([clat, clon]) = cell_centre(&cell)
                    && areas.iter().any(|a| point_in_polygon(clat, clon, a))
                {
                    cells.insert(cell);
                }
                lon += step_lon;
            }
            lat += step_lat;
        }
        cells.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_a_known_distance() {
        // Jinan Quancheng Square to Daming Lake south gate, about 1.6 km.
        let d = haversine_m(36.6616, 117.0190, 36.6750, 117.0250);
        assert!((d - 1583.0).abs() < 30.0, "{d}");
        assert_eq!(haversine_m(36.0, 117.0, 36.0, 117.0), 0.0);
    }

    #[test]
    fn points_are_placed_in_their_station_area() {
        let config = Config::defaults();
        let map = CityMap::new(&config);
        let p = map.place(36.6640, 117.0220);
        assert_eq!(p.jurisdiction, "quancheng");
        assert!(p.inside);
        assert_eq!(p.cell.as_deref().map(str::len), Some(15));
        let outside = map.place(38.9, -77.0);
        assert_eq!(outside.jurisdiction, "shiju");
        assert!(!outside.inside);
    }

    #[test]
    fn places_by_name_in_free_text() {
        let map = CityMap::new(&Config::defaults());
        assert_eq!(map.place_by_name("大明湖派出所辖区").jurisdiction, "daminghu");
        let unknown = map.place_by_name("U.S. nationwide");
        assert_eq!(unknown.jurisdiction, "shiju");
        assert!(!unknown.inside);
    }

    #[test]
    fn centroid_of_a_square() {
        let c = polygon_centroid(&[[0.0, 0.0], [0.0, 2.0], [2.0, 2.0], [2.0, 0.0]]).unwrap();
        assert!((c[0] - 1.0).abs() < 1e-9 && (c[1] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_city_grid_covers_every_station_centre() {
        let config = Config::defaults();
        let map = CityMap::new(&config);
        let cells = map.cells();
        assert!(cells.len() > 20, "{}", cells.len());
        for j in config.city.jurisdictions.iter().filter(|j| !j.area.is_empty()) {
            let cell = cell_of(j.centre[0], j.centre[1], config.city.h3_resolution).unwrap();
            assert!(cells.contains(&cell), "{}", j.id);
        }
        assert_eq!(cell_boundary(&cells[0]).unwrap().len(), 6);
    }
}
