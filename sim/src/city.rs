//! The simulated city's streets: a square grid (200 m between streets by
//! default) laid over the station areas of the configured city, random
//! places on it, and Manhattan paths along it that units drive.
//!
//! Pure geometry on a local flat projection (fine at city scale); nothing
//! here does IO or keeps time. It must never place a point outside every
//! station area when asked for a place in the city.

use bus::Config;
use bus::geo::point_in_polygon;
use rand::Rng;

/// Metres per degree of latitude (and of longitude at the equator).
const M_PER_DEG: f64 = 111_320.0;

/// Street spacing used by [`Grid::new`]: a block of a Chinese city centre.
pub const STREET_SPACING_M: f64 = 200.0;

/// The street grid over the station areas.
#[derive(Debug, Clone)]
pub struct Grid {
    /// South-west corner of the bounding box of all station areas: node (0, 0).
    origin: [f64; 2],
    spacing_m: f64,
    m_per_deg_lon: f64,
    /// Number of streets north-south (rows) and east-west (columns).
    rows: i64,
    cols: i64,
    /// Station polygons (`[lat, lon]`), with the jurisdiction id.
    areas: Vec<(String, Vec<[f64; 2]>)>,
}

/// A node of the grid: a street crossing, by row (north) and column (east).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Node {
    pub row: i64,
    pub col: i64,
}

impl Grid {
    /// The grid over the configured city's station areas (those with a
    /// polygon). A city without any area gets a small grid around its first
    /// jurisdiction's centre, so the simulator still runs.
    pub fn new(config: &Config) -> Grid {
        Grid::with_spacing(config, STREET_SPACING_M)
    }

    pub fn with_spacing(config: &Config, spacing_m: f64) -> Grid {
        let spacing_m = if spacing_m.is_finite() && spacing_m >= 10.0 {
            spacing_m
        } else {
            STREET_SPACING_M
        };
        let areas: Vec<(String, Vec<[f64; 2]>)> = config
            .city
            .jurisdictions
            .iter()
            .filter(|j| j.area.len() >= 3)
            .map(|j| (j.id.clone(), j.area.clone()))
            .collect();
        let (mut min_lat, mut max_lat, mut min_lon, mut max_lon) = (90.0f64, -90.0f64, 180.0f64, -180.0f64);
        for [lat, lon] in areas.iter().flat_map(|(_, a)| a.iter()) {
            min_lat = min_lat.min(*lat);
            max_lat = max_lat.max(*lat);
            min_lon = min_lon.min(*lon);
            max_lon = max_lon.max(*lon);
        }
        if min_lat > max_lat {
            let centre = config.city.jurisdictions.first().map_or([0.0, 0.0], |j| j.centre);
            (min_lat, max_lat, min_lon, max_lon) =
                (centre[0] - 0.01, centre[0] + 0.01, centre[1] - 0.01, centre[1] + 0.01);
        }
        let m_per_deg_lon = M_PER_DEG * min_lat.to_radians().cos().max(0.01);
        let rows = (((max_lat - min_lat) * M_PER_DEG) / spacing_m).ceil() as i64;
        let cols = (((max_lon - min_lon) * m_per_deg_lon) / spacing_m).ceil() as i64;
        Grid {
            origin: [min_lat, min_lon],
            spacing_m,
            m_per_deg_lon,
            rows: rows.max(1),
            cols: cols.max(1),
            areas,
        }
    }

    pub fn spacing_m(&self) -> f64 {
        self.spacing_m
    }

    /// Position of a node, `[lat, lon]`.
    pub fn point(&self, node: Node) -> [f64; 2] {
        self.at_xy(node.col as f64 * self.spacing_m, node.row as f64 * self.spacing_m)
    }

    /// The nearest street crossing to a point.
    pub fn snap(&self, point: [f64; 2]) -> Node {
        let [x, y] = self.to_xy(point);
        Node {
            row: (y / self.spacing_m).round() as i64,
            col: (x / self.spacing_m).round() as i64,
        }
    }

    /// Local metres east (x) and north (y) of the origin.
    fn to_xy(&self, [lat, lon]: [f64; 2]) -> [f64; 2] {
        [
            (lon - self.origin[1]) * self.m_per_deg_lon,
            (lat - self.origin[0]) * M_PER_DEG,
        ]
    }

    fn at_xy(&self, x: f64, y: f64) -> [f64; 2] {
        [self.origin[0] + y / M_PER_DEG, self.origin[1] + x / self.m_per_deg_lon]
    }

    /// Flat distance in metres on the local projection (what the grid is
    /// measured in, so path lengths add up exactly).
    pub fn distance_m(&self, a: [f64; 2], b: [f64; 2]) -> f64 {
        let [ax, ay] = self.to_xy(a);
        let [bx, by] = self.to_xy(b);
        ((ax - bx).powi(2) + (ay - by).powi(2)).sqrt()
    }

    /// The station area a point lies in, if any.
    pub fn jurisdiction_of(&self, point: [f64; 2]) -> Option<&str> {
        self.areas
            .iter()
            .find(|(_, area)| point_in_polygon(point[0], point[1], area))
            .map(|(id, _)| id.as_str())
    }

    pub fn inside(&self, point: [f64; 2]) -> bool {
        self.jurisdiction_of(point).is_some()
    }

    /// A random street crossing inside some station area, areas weighted by
    /// their size (uniform over the grid). `None` only for a city without
    /// areas or with areas too thin to hold a crossing.
    pub fn random_node<R: Rng>(&self, rng: &mut R) -> Option<Node> {
        for _ in 0..200 {
            let node = Node {
                row: rng.random_range(0..=self.rows),
                col: rng.random_range(0..=self.cols),
            };
            if self.inside(self.point(node)) {
                return Some(node);
            }
        }
        None
    }

    /// A random place on a street (a crossing, or part way along the block
    /// east of it) inside a station area.
    pub fn random_place<R: Rng>(&self, rng: &mut R) -> Option<[f64; 2]> {
        let node = self.random_node(rng)?;
        let base = self.point(node);
        let along = rng.random_range(0.0..1.0) * self.spacing_m;
        let [x, y] = self.to_xy(base);
        let moved = self.at_xy(x + along, y);
        Some(if self.inside(moved) { moved } else { base })
    }

    /// A place on the streets within about `radius_m` of `near` (a repeat
    /// caller standing down the road), inside a station area; `near` itself
    /// when nothing closer fits.
    pub fn place_near<R: Rng>(&self, rng: &mut R, near: [f64; 2], radius_m: f64) -> [f64; 2] {
        let [x, y] = self.to_xy(near);
        for _ in 0..20 {
            // Move along one street only, as a person on foot would.
            let d = rng.random_range(-radius_m..=radius_m);
            let (nx, ny) = if rng.random_bool(0.5) { (x + d, y) } else { (x, y + d) };
            let p = self.at_xy(nx, ny);
            if self.inside(p) {
                return p;
            }
        }
        near
    }

    /// The Manhattan path from `from` to `to`: onto the nearest crossing,
    /// east or west along the street to the destination's column, north or
    /// south to its crossing, then to the destination itself.
    pub fn path(&self, from: [f64; 2], to: [f64; 2]) -> Path {
        let a = self.snap(from);
        let b = self.snap(to);
        let corner = Node { row: a.row, col: b.col };
        let mut points = vec![from];
        if self.distance_m(from, to) < 1.0 {
            // Already there: no detour to the nearest crossing and back.
            points.push(to);
        } else {
            for p in [self.point(a), self.point(corner), self.point(b), to] {
                if points.last().is_none_or(|last| self.distance_m(*last, p) > 1e-6) {
                    points.push(p);
                }
            }
        }
        let mut cumulative = Vec::with_capacity(points.len());
        let mut total = 0.0;
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                total += self.distance_m(points[i - 1], *p);
            }
            cumulative.push(total);
        }
        Path {
            points,
            cumulative,
            grid: self.clone_projection(),
        }
    }

    fn clone_projection(&self) -> Projection {
        Projection {
            origin: self.origin,
            m_per_deg_lon: self.m_per_deg_lon,
        }
    }
}

/// The local projection a path interpolates on (a path must not carry the
/// whole grid with its polygons).
#[derive(Debug, Clone, Copy)]
struct Projection {
    origin: [f64; 2],
    m_per_deg_lon: f64,
}

/// A route along the streets: its corners and the distance to each.
#[derive(Debug, Clone)]
pub struct Path {
    points: Vec<[f64; 2]>,
    cumulative: Vec<f64>,
    grid: Projection,
}

impl Path {
    pub fn length_m(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    pub fn points(&self) -> &[[f64; 2]] {
        &self.points
    }

    pub fn end(&self) -> [f64; 2] {
        self.points.last().copied().unwrap_or([0.0, 0.0])
    }

    /// Where a unit is after driving `distance_m` along the path (clamped to
    /// its ends).
    pub fn at(&self, distance_m: f64) -> [f64; 2] {
        if self.points.len() < 2 || distance_m <= 0.0 {
            return self.points.first().copied().unwrap_or([0.0, 0.0]);
        }
        if distance_m >= self.length_m() {
            return self.end();
        }
        let i = self.cumulative.partition_point(|c| *c <= distance_m).max(1);
        let (start, end) = (self.points[i - 1], self.points[i]);
        let span = self.cumulative[i] - self.cumulative[i - 1];
        let f = if span > 0.0 {
            (distance_m - self.cumulative[i - 1]) / span
        } else {
            1.0
        };
        let p = &self.grid;
        let to_xy = |q: [f64; 2]| [(q[1] - p.origin[1]) * p.m_per_deg_lon, (q[0] - p.origin[0]) * M_PER_DEG];
        let [sx, sy] = to_xy(start);
        let [ex, ey] = to_xy(end);
        let (x, y) = (sx + (ex - sx) * f, sy + (ey - sy) * f);
        [p.origin[0] + y / M_PER_DEG, p.origin[1] + x / p.m_per_deg_lon]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn a_path_between_crossings_has_the_manhattan_length() {
        let config = Config::defaults();
        let grid = Grid::new(&config);
        let a = Node { row: 3, col: 4 };
        let b = Node { row: 10, col: 1 };
        let path = grid.path(grid.point(a), grid.point(b));
        let expected = ((10 - 3) + (4 - 1)) as f64 * grid.spacing_m();
        assert!(
            (path.length_m() - expected).abs() < 1e-6,
            "{} vs {expected}",
            path.length_m()
        );
        // One corner: start, corner, end.
        assert_eq!(path.points().len(), 3);
    }

    #[test]
    fn a_path_from_anywhere_ends_at_the_destination_and_is_at_least_the_straight_line() {
        let config = Config::defaults();
        let grid = Grid::new(&config);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let from = grid.random_place(&mut rng).unwrap();
            let to = grid.random_place(&mut rng).unwrap();
            let path = grid.path(from, to);
            assert!(path.length_m() + 1e-6 >= grid.distance_m(from, to));
            assert!(grid.distance_m(path.end(), to) < 1e-6);
            assert!(grid.distance_m(path.at(0.0), from) < 1e-6);
            // Half way along is half the length from the start, along the path.
            let mid = path.at(path.length_m() / 2.0);
            assert!(grid.distance_m(from, mid) <= path.length_m() / 2.0 + 1e-6);
        }
    }

    #[test]
    fn random_places_are_inside_station_areas() {
        let config = Config::defaults();
        let grid = Grid::new(&config);
        let map = bus::geo::CityMap::new(&config);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..500 {
            let p = grid.random_place(&mut rng).unwrap();
            assert!(map.place(p[0], p[1]).inside, "{p:?}");
            let near = grid.place_near(&mut rng, p, 150.0);
            assert!(grid.inside(near));
            assert!(grid.distance_m(p, near) <= 150.0 + 1e-6);
        }
    }

    #[test]
    fn snapping_a_crossing_returns_it() {
        let grid = Grid::new(&Config::defaults());
        let n = Node { row: 5, col: 7 };
        assert_eq!(grid.snap(grid.point(n)), n);
    }
}
