//! A simulated patrol unit's behaviour as a pure state machine: given task
//! pushes and the simulated time, which commands it sends and when. Comes on
//! duty, patrols the streets around its post while available (动中备勤),
//! signs for a task after a human-like delay (sometimes late), drives the
//! street grid at its type's speed reporting positions, goes on scene,
//! clears after a while, heads back and is available again; a cancelled
//! task sends it back to available.
//!
//! No IO and no clock of its own: the caller passes the simulated time
//! (offset from the start of the run) into every call and sleeps until
//! [`Agent::next_wake`]. So it is tested with explicit times, and the
//! WebSocket driver in `unit.rs` stays thin. It must never emit a command
//! for a task it was not given.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bus::model::{Command, ReportedStatus, TaskStatus, UnitType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::city::{Grid, Node, Path};

/// Tasks a unit remembers having seen, so replays after a reconnect and
/// echoes of its own reports are not taken for new tasks.
const REMEMBERED_TASKS: usize = 256;
/// Tasks waiting while the unit is busy; more than this is a router bug and
/// the extra tasks are left for the router's re-dispatch.
const MAX_QUEUED_TASKS: usize = 8;

/// How a unit behaves, in simulated seconds.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Median delay before signing for a task; lognormal around it.
    pub ack_median_s: f64,
    pub ack_min_s: f64,
    pub ack_max_s: f64,
    /// Share of tasks signed for late, after `late_ack_s`.
    pub late_ack_share: f64,
    pub late_ack_s: (f64, f64),
    /// How long a unit stays on scene.
    pub on_scene_s: (f64, f64),
    /// How often a unit on a task reports its position.
    pub position_every_s: f64,
    /// Driving speed on the grid, km/h.
    pub speed_kmh: f64,
    /// Whether an available unit patrols around its home (a post stays).
    pub patrol: bool,
    /// How far from home a patrol goes.
    pub patrol_radius_m: f64,
    /// How long a patrol stops between legs.
    pub patrol_pause_s: (f64, f64),
    /// Patrol (and the way back home) at this share of the task speed.
    pub patrol_speed_share: f64,
    /// How often a patrolling unit reports its position.
    pub patrol_position_every_s: f64,
}

impl Behaviour {
    /// The behaviour the brief describes: sign in 10–40 s, late ones in
    /// 70–120 s, 5–20 minutes on scene, a position every 10 s on a task.
    /// No patrolling between tasks (see [`Behaviour::for_unit`]).
    pub fn new(speed_kmh: f64, late_ack_share: f64) -> Behaviour {
        Behaviour {
            ack_median_s: 18.0,
            ack_min_s: 10.0,
            ack_max_s: 40.0,
            late_ack_share: late_ack_share.clamp(0.0, 1.0),
            late_ack_s: (70.0, 120.0),
            on_scene_s: (300.0, 1200.0),
            position_every_s: 10.0,
            speed_kmh: if speed_kmh.is_finite() && speed_kmh > 0.0 {
                speed_kmh
            } else {
                30.0
            },
            patrol: false,
            patrol_radius_m: 600.0,
            patrol_pause_s: (120.0, 600.0),
            patrol_speed_share: 0.5,
            patrol_position_every_s: 20.0,
        }
    }

    /// As [`Behaviour::new`], patrolling between tasks unless the unit is a
    /// post (警务站), which stays where it is.
    pub fn for_unit(unit_type: UnitType, speed_kmh: f64, late_ack_share: f64) -> Behaviour {
        Behaviour {
            patrol: unit_type != UnitType::Post,
            ..Behaviour::new(speed_kmh, late_ack_share)
        }
    }

    /// How long until the officer signs for a task, and whether that is
    /// one of the late ones.
    pub fn sample_ack_delay<R: Rng>(&self, rng: &mut R) -> (Duration, bool) {
        if rng.random_range(0.0..1.0) < self.late_ack_share {
            let (lo, hi) = self.late_ack_s;
            return (Duration::from_secs_f64(rng.random_range(lo..=hi)), true);
        }
        // Lognormal: most sign within half a minute, a few take longer.
        let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random_range(0.0..1.0));
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let s = (self.ack_median_s.ln() + 0.35 * z)
            .exp()
            .clamp(self.ack_min_s, self.ack_max_s);
        (Duration::from_secs_f64(s), false)
    }

    /// How long a unit stays on scene.
    pub fn sample_on_scene<R: Rng>(&self, rng: &mut R) -> Duration {
        let (lo, hi) = self.on_scene_s;
        Duration::from_secs_f64(rng.random_range(lo..=hi))
    }

    pub fn speed_mps(&self) -> f64 {
        self.speed_kmh / 3.6
    }

    pub fn patrol_speed_mps(&self) -> f64 {
        self.speed_mps() * self.patrol_speed_share.clamp(0.05, 1.0)
    }
}

/// What a unit needs from a task push. Parsed leniently from the push's
/// `data` (a contract Task), so a server adding fields never breaks a unit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskUpdate {
    pub id: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub location: Option<TaskLocation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct TaskLocation {
    pub lat: f64,
    pub lon: f64,
}

impl TaskUpdate {
    fn target(&self) -> Option<[f64; 2]> {
        self.location
            .filter(|l| l.lat.is_finite() && l.lon.is_finite())
            .map(|l| [l.lat, l.lon])
    }
}

/// What happened, for the run's report (the commands say it to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    TaskReceived,
    Acked {
        late: bool,
    },
    OnScene,
    Cleared,
    Cancelled,
    /// A task arrived while the queue was full and was left to the router.
    Dropped,
    /// The operator desk closed an incident.
    Closed,
}

/// Commands to send and notes for the report, from one step.
#[derive(Debug, Default, PartialEq)]
pub struct Output {
    pub commands: Vec<Command>,
    pub notes: Vec<Note>,
}

/// A drive along the streets that is under way.
#[derive(Debug, Clone)]
struct Drive {
    path: Path,
    depart_at: Duration,
    next_position_at: Duration,
    speed_mps: f64,
}

impl Drive {
    fn arrive_at(&self) -> Duration {
        self.depart_at + Duration::from_secs_f64(self.path.length_m() / self.speed_mps)
    }

    fn position_at(&self, now: Duration) -> [f64; 2] {
        let driven = now.saturating_sub(self.depart_at).as_secs_f64() * self.speed_mps;
        self.path.at(driven)
    }
}

/// What an available unit is doing.
#[derive(Debug, Clone)]
enum Roam {
    /// Standing; moves on at `until` (never, for a post).
    Still { until: Option<Duration> },
    /// On patrol or on the way back home.
    Moving(Drive),
}

#[derive(Debug, Clone)]
enum Phase {
    OffDuty,
    Available(Roam),
    /// Task received; the officer signs for it at `ack_at`.
    Pending {
        task: TaskUpdate,
        ack_at: Duration,
        late: bool,
    },
    Driving {
        task: String,
        drive: Drive,
    },
    OnScene {
        task: String,
        clear_at: Duration,
    },
}

/// One simulated unit.
#[derive(Debug)]
pub struct Agent {
    pub id: String,
    pub unit_type: UnitType,
    home: [f64; 2],
    position: [f64; 2],
    phase: Phase,
    behaviour: Behaviour,
    grid: std::sync::Arc<Grid>,
    rng: StdRng,
    queue: VecDeque<TaskUpdate>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    /// When the terminal last sent anything (for the heartbeat).
    last_report: Duration,
}

/// A terminal on duty reports its position at least this often, moving or
/// not: the router does not dispatch a unit it has not heard from for
/// `dispatch.stale_after_s` (a dead terminal), so a parked unit must not
/// look dead.
const HEARTBEAT: Duration = Duration::from_secs(60);

impl Agent {
    /// A unit at `home`, off duty until [`Agent::start`]. `seed` makes its
    /// delays repeatable.
    pub fn new(
        id: &str,
        unit_type: UnitType,
        home: [f64; 2],
        behaviour: Behaviour,
        grid: std::sync::Arc<Grid>,
        seed: u64,
    ) -> Agent {
        Agent {
            id: id.to_owned(),
            unit_type,
            home,
            position: home,
            phase: Phase::OffDuty,
            behaviour,
            grid,
            rng: StdRng::seed_from_u64(seed),
            queue: VecDeque::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            last_report: Duration::ZERO,
        }
    }

    /// Where the unit was last placed (at its last report or step).
    pub fn position(&self) -> [f64; 2] {
        self.position
    }

    /// The task the unit is working on or about to sign for.
    pub fn current_task(&self) -> Option<&str> {
        match &self.phase {
            Phase::Pending { task, .. } => Some(&task.id),
            Phase::Driving { task, .. } | Phase::OnScene { task, .. } => Some(task),
            Phase::OffDuty | Phase::Available(_) => None,
        }
    }

    pub fn is_available(&self) -> bool {
        matches!(self.phase, Phase::Available(_))
    }

    /// Coming on duty: `status available` with the position (and type, so a
    /// unit missing from the roster registers correctly).
    pub fn start(&mut self, now: Duration) -> Output {
        let until = self.pause_until(now);
        self.phase = Phase::Available(Roam::Still { until });
        self.last_report = now;
        Output {
            commands: vec![self.status(ReportedStatus::Available, None, Some(self.unit_type))],
            notes: vec![],
        }
    }

    /// Back on a new connection: an available unit says so again with its
    /// position (idempotent; it re-registers the unit with a deployment
    /// that restarted). A unit on a task says nothing: its unconfirmed
    /// reports are sent again by the driver.
    pub fn hello(&mut self, now: Duration) -> Output {
        if !self.is_available() {
            return Output::default();
        }
        self.settle_keep_moving(now);
        Output {
            commands: vec![self.status(ReportedStatus::Available, None, Some(self.unit_type))],
            notes: vec![],
        }
    }

    /// Updates the position of a patrolling unit without stopping it.
    fn settle_keep_moving(&mut self, now: Duration) {
        if let Phase::Available(Roam::Moving(drive)) = &self.phase {
            self.position = drive.position_at(now);
        }
    }

    /// Going off duty at the end of the run.
    pub fn stop(&mut self, now: Duration) -> Output {
        self.settle(now);
        self.phase = Phase::OffDuty;
        self.queue.clear();
        Output {
            commands: vec![self.status(ReportedStatus::OffDuty, None, None)],
            notes: vec![],
        }
    }

    fn status(&self, status: ReportedStatus, task: Option<&str>, unit_type: Option<UnitType>) -> Command {
        Command::Status {
            status,
            task: task.map(str::to_owned),
            lat: Some(self.position[0]),
            lon: Some(self.position[1]),
            note: None,
            unit_type,
            reason: None,
        }
    }

    fn position_command(&self) -> Command {
        Command::Position {
            lat: self.position[0],
            lon: self.position[1],
        }
    }

    /// Places a patrolling unit where it is at `now` and stops it there.
    fn settle(&mut self, now: Duration) {
        if let Phase::Available(Roam::Moving(drive)) = &self.phase {
            self.position = drive.position_at(now);
            self.phase = Phase::Available(Roam::Still { until: None });
        }
    }

    fn remember(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        self.seen.insert(id.to_owned());
        self.seen_order.push_back(id.to_owned());
        if self.seen_order.len() > REMEMBERED_TASKS
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    fn ack_delay(&mut self) -> (Duration, bool) {
        self.behaviour.sample_ack_delay(&mut self.rng)
    }

    fn pause_until(&mut self, now: Duration) -> Option<Duration> {
        if !self.behaviour.patrol {
            return None;
        }
        let (lo, hi) = self.behaviour.patrol_pause_s;
        Some(now + Duration::from_secs_f64(self.rng.random_range(lo..=hi)))
    }

    /// A street crossing within the patrol radius of home, in home's
    /// station area (a unit patrols its own 辖区).
    fn patrol_target(&mut self) -> Option<[f64; 2]> {
        let home_area = self.grid.jurisdiction_of(self.home).map(str::to_owned);
        let centre = self.grid.snap(self.home);
        let steps = (self.behaviour.patrol_radius_m / self.grid.spacing_m())
            .floor()
            .max(1.0) as i64;
        for _ in 0..10 {
            let node = Node {
                row: centre.row + self.rng.random_range(-steps..=steps),
                col: centre.col + self.rng.random_range(-steps..=steps),
            };
            let point = self.grid.point(node);
            let area = self.grid.jurisdiction_of(point);
            if area.is_some() && (home_area.is_none() || area == home_area.as_deref()) {
                return Some(point);
            }
        }
        None
    }

    /// Available again at `now`: head home if away, else stand by.
    fn stand_by(&mut self, now: Duration) {
        let away = self.grid.distance_m(self.position, self.home) > 1.0;
        self.phase = if away {
            let every = self.behaviour.patrol_position_every_s;
            Phase::Available(Roam::Moving(Drive {
                path: self.grid.path(self.position, self.home),
                depart_at: now,
                next_position_at: now + Duration::from_secs_f64(every),
                speed_mps: self.behaviour.patrol_speed_mps(),
            }))
        } else {
            Phase::Available(Roam::Still {
                until: self.pause_until(now),
            })
        };
    }

    /// A task push (new task, or a change to one).
    pub fn on_task(&mut self, now: Duration, task: TaskUpdate) -> Output {
        let mut out = Output::default();
        let current = self.current_task().map(str::to_owned);
        match task.status {
            TaskStatus::Cancelled | TaskStatus::Cleared => {
                self.remember(&task.id);
                self.queue.retain(|q| q.id != task.id);
                if current.as_deref() == Some(task.id.as_str()) {
                    // Taken off the task by the command centre (or cleared
                    // for us): available where we stand, then head back.
                    if let Phase::Driving { drive, .. } = &self.phase {
                        self.position = drive.position_at(now);
                    }
                    out.notes.push(Note::Cancelled);
                    out.commands.push(self.status(ReportedStatus::Available, None, None));
                    self.stand_by(now);
                    self.take_next(now);
                }
            }
            TaskStatus::Issued => {
                if !self.remember(&task.id) || matches!(self.phase, Phase::OffDuty) {
                    return out;
                }
                out.notes.push(Note::TaskReceived);
                if self.is_available() {
                    self.settle(now);
                    self.begin(now, task);
                } else if self.queue.len() < MAX_QUEUED_TASKS {
                    self.queue.push_back(task);
                } else {
                    out.notes.push(Note::Dropped);
                }
            }
            TaskStatus::Acknowledged | TaskStatus::EnRoute | TaskStatus::OnScene => {
                // A task we signed for before a restart (the snapshot after
                // subscribe): carry on with it. Otherwise an echo of our own
                // report.
                if self.remember(&task.id) && self.is_available() {
                    self.settle(now);
                    out.notes.push(Note::TaskReceived);
                    if task.status == TaskStatus::OnScene {
                        self.arrive(now, task.id.clone(), &mut out);
                    } else {
                        self.depart(now, &task, &mut out);
                    }
                }
            }
        }
        out
    }

    fn begin(&mut self, now: Duration, task: TaskUpdate) {
        let (delay, late) = self.ack_delay();
        self.phase = Phase::Pending {
            task,
            ack_at: now + delay,
            late,
        };
    }

    fn take_next(&mut self, now: Duration) {
        if let Some(task) = self.queue.pop_front() {
            self.settle(now);
            self.begin(now, task);
        }
    }

    fn depart(&mut self, now: Duration, task: &TaskUpdate, out: &mut Output) {
        let target = task.target().unwrap_or(self.position);
        let path = self.grid.path(self.position, target);
        out.commands
            .push(self.status(ReportedStatus::EnRoute, Some(&task.id), None));
        self.phase = Phase::Driving {
            task: task.id.clone(),
            drive: Drive {
                path,
                depart_at: now,
                next_position_at: now + Duration::from_secs_f64(self.behaviour.position_every_s),
                speed_mps: self.behaviour.speed_mps(),
            },
        };
    }

    fn arrive(&mut self, at: Duration, task: String, out: &mut Output) {
        out.commands
            .push(self.status(ReportedStatus::OnScene, Some(&task), None));
        out.notes.push(Note::OnScene);
        let stay = self.behaviour.sample_on_scene(&mut self.rng);
        self.phase = Phase::OnScene {
            task,
            clear_at: at + stay,
        };
    }

    /// When the unit next has something to do, if ever (without a push).
    pub fn next_wake(&self) -> Option<Duration> {
        match &self.phase {
            Phase::OffDuty => None,
            Phase::Available(Roam::Still { until }) => {
                Some(until.map_or(self.heartbeat_due(), |u| u.min(self.heartbeat_due())))
            }
            Phase::Available(Roam::Moving(drive)) | Phase::Driving { drive, .. } => {
                Some(drive.next_position_at.min(drive.arrive_at()))
            }
            Phase::Pending { ack_at, .. } => Some(*ack_at),
            Phase::OnScene { clear_at, .. } => Some((*clear_at).min(self.heartbeat_due())),
        }
    }

    /// When a unit standing still (parked, or on scene) reports next.
    fn heartbeat_due(&self) -> Duration {
        self.last_report + HEARTBEAT
    }

    /// Moves a drive on to `now`: the position report when one is due.
    /// Returns the drive for the next step, or `None` on arrival (the
    /// position is then the destination, as of `drive.arrive_at()`).
    fn advance(&mut self, mut drive: Drive, now: Duration, every_s: f64, out: &mut Output) -> Option<Drive> {
        if now >= drive.arrive_at() {
            self.position = drive.path.end();
            return None;
        }
        if now >= drive.next_position_at {
            self.position = drive.position_at(now);
            out.commands.push(self.position_command());
            drive.next_position_at = now + Duration::from_secs_f64(every_s);
        }
        Some(drive)
    }

    /// Everything due by `now`, in order (one call may ack, drive and arrive
    /// when the caller slept long).
    pub fn tick(&mut self, now: Duration) -> Output {
        let mut out = Output::default();
        // Each pass moves one phase on; a bound keeps a bug from looping.
        for _ in 0..16 {
            match self.phase.clone() {
                Phase::OffDuty => break,
                Phase::Available(Roam::Still { until }) => {
                    let Some(at) = until.filter(|t| now >= *t) else { break };
                    self.phase = match self.patrol_target() {
                        Some(target) => Phase::Available(Roam::Moving(Drive {
                            path: self.grid.path(self.position, target),
                            depart_at: at,
                            next_position_at: at + Duration::from_secs_f64(self.behaviour.patrol_position_every_s),
                            speed_mps: self.behaviour.patrol_speed_mps(),
                        })),
                        None => Phase::Available(Roam::Still {
                            until: self.pause_until(at),
                        }),
                    };
                }
                Phase::Available(Roam::Moving(drive)) => {
                    let arrive_at = drive.arrive_at();
                    let every = self.behaviour.patrol_position_every_s;
                    match self.advance(drive, now, every, &mut out) {
                        Some(drive) => {
                            self.phase = Phase::Available(Roam::Moving(drive));
                            break;
                        }
                        None => {
                            out.commands.push(self.position_command());
                            self.phase = Phase::Available(Roam::Still {
                                until: self.pause_until(arrive_at),
                            });
                        }
                    }
                }
                Phase::Pending { task, ack_at, late } => {
                    if now < ack_at {
                        break;
                    }
                    out.commands.push(Command::Ack { task: task.id.clone() });
                    out.notes.push(Note::Acked { late });
                    self.depart(ack_at, &task, &mut out);
                }
                Phase::Driving { task, drive } => {
                    let arrive_at = drive.arrive_at();
                    let every = self.behaviour.position_every_s;
                    match self.advance(drive, now, every, &mut out) {
                        Some(drive) => {
                            self.phase = Phase::Driving { task, drive };
                            break;
                        }
                        None => self.arrive(arrive_at, task, &mut out),
                    }
                }
                Phase::OnScene { task, clear_at } => {
                    if now < clear_at {
                        break;
                    }
                    out.commands
                        .push(self.status(ReportedStatus::Cleared, Some(&task), None));
                    out.notes.push(Note::Cleared);
                    out.commands.push(self.status(ReportedStatus::Available, None, None));
                    self.stand_by(clear_at);
                    self.take_next(clear_at);
                }
            }
        }
        let still = matches!(self.phase, Phase::Available(Roam::Still { .. }) | Phase::OnScene { .. });
        if !matches!(self.phase, Phase::OffDuty) {
            if still && out.commands.is_empty() && now >= self.heartbeat_due() {
                out.commands.push(self.position_command());
            }
            if !out.commands.is_empty() {
                self.last_report = now;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::Config;
    use std::sync::Arc;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn agent(late_share: f64) -> Agent {
        let grid = Arc::new(Grid::new(&Config::defaults()));
        Agent::new(
            "quancheng-01",
            UnitType::PatrolCar,
            [36.6611, 117.0170],
            Behaviour::new(30.0, late_share),
            grid,
            42,
        )
    }

    fn issued(id: &str, lat: f64, lon: f64) -> TaskUpdate {
        TaskUpdate {
            id: id.into(),
            status: TaskStatus::Issued,
            location: Some(TaskLocation { lat, lon }),
        }
    }

    fn ops(out: &Output) -> Vec<String> {
        out.commands
            .iter()
            .map(|c| match c {
                Command::Status { status, .. } => format!("status {status:?}"),
                Command::Ack { task } => format!("ack {task}"),
                Command::Position { .. } => "position".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_task_is_signed_for_after_a_human_delay_then_driven_to_and_cleared() {
        let mut a = agent(0.0);
        assert_eq!(ops(&a.start(secs(0.0))), ["status Available"]);
        let out = a.on_task(secs(100.0), issued("t1", 36.6680, 117.0300));
        assert!(out.commands.is_empty(), "nothing at once: a human reads the task first");
        assert_eq!(out.notes, [Note::TaskReceived]);
        let ack_at = a.next_wake().unwrap();
        let delay = (ack_at - secs(100.0)).as_secs_f64();
        assert!((10.0..=40.0).contains(&delay), "{delay}");
        assert!(a.tick(ack_at - secs(0.5)).commands.is_empty());

        let out = a.tick(ack_at);
        assert_eq!(ops(&out), ["ack t1", "status EnRoute"]);
        assert_eq!(out.notes, [Note::Acked { late: false }]);

        // Drive: positions every 10 s until arrival, then on scene.
        let mut positions = 0;
        let mut arrived = None;
        for _ in 0..10_000 {
            let now = a.next_wake().unwrap();
            let out = a.tick(now);
            positions += out
                .commands
                .iter()
                .filter(|c| matches!(c, Command::Position { .. }))
                .count();
            if out.notes.contains(&Note::OnScene) {
                assert_eq!(ops(&out), ["status OnScene"]);
                arrived = Some(now);
                break;
            }
        }
        let arrived = arrived.expect("arrives");
        let grid = Grid::new(&Config::defaults());
        let length = grid.path([36.6611, 117.0170], [36.6680, 117.0300]).length_m();
        let drive_s = (arrived - ack_at).as_secs_f64();
        assert!((drive_s - length / (30.0 / 3.6)).abs() < 1e-3, "{drive_s}");
        assert_eq!(
            positions,
            (drive_s / 10.0).ceil() as usize - 1,
            "one position per 10 s on the way"
        );
        assert!(grid.distance_m(a.position(), [36.6680, 117.0300]) < 1e-6);

        // On scene: a heartbeat a minute until it clears.
        let mut heartbeats = 0;
        let clear_at = loop {
            let wake = a.next_wake().unwrap();
            let out = a.tick(wake);
            if out.notes.contains(&Note::Cleared) {
                assert_eq!(ops(&out), ["status Cleared", "status Available"]);
                assert!(matches!(&out.commands[0], Command::Status { task: Some(t), .. } if t == "t1"));
                break wake;
            }
            assert_eq!(ops(&out), ["position"], "only a heartbeat on scene");
            heartbeats += 1;
        };
        let stay = (clear_at - arrived).as_secs_f64();
        assert!((300.0..=1200.0).contains(&stay), "{stay}");
        assert!(
            (heartbeats as f64 - stay / 60.0).abs() <= 1.0,
            "{heartbeats} in {stay} s"
        );
        assert!(a.is_available());

        // Then back home at patrol pace, reporting positions, and standing by.
        let home = [36.6611, 117.0170];
        let back = grid.path([36.6680, 117.0300], home).length_m() / (30.0 / 3.6 * 0.5);
        let mut last = clear_at;
        for _ in 0..10_000 {
            if grid.distance_m(a.position(), home) < 1e-6 {
                break;
            }
            last = a.next_wake().unwrap();
            a.tick(last);
            assert!(a.is_available());
        }
        assert!(grid.distance_m(a.position(), home) < 1e-6);
        assert!(((last - clear_at).as_secs_f64() - back).abs() < 1e-3);
    }

    #[test]
    fn an_available_patrol_car_patrols_its_own_area_and_answers_from_where_it_is() {
        let grid = Arc::new(Grid::new(&Config::defaults()));
        let home = [36.6611, 117.0170];
        let behaviour = Behaviour::for_unit(UnitType::PatrolCar, 30.0, 0.0);
        let mut a = Agent::new("quancheng-01", UnitType::PatrolCar, home, behaviour, grid.clone(), 3);
        a.start(secs(0.0));
        let mut positions = 0;
        let mut now = secs(0.0);
        while positions < 40 {
            now = a.next_wake().expect("a patrol never stops");
            for c in a.tick(now).commands {
                let Command::Position { lat, lon } = c else {
                    panic!("only positions while patrolling: {c:?}")
                };
                positions += 1;
                assert_eq!(grid.jurisdiction_of([lat, lon]), Some("quancheng"));
                assert!(grid.distance_m(home, [lat, lon]) <= 2.0 * 600.0 * 1.5);
            }
        }
        // A task mid-leg: the drive starts where the car is now.
        a.on_task(now + secs(3.0), issued("t1", 36.6680, 117.0300));
        let here = a.position();
        let ack_at = a.next_wake().unwrap();
        let out = a.tick(ack_at);
        assert!(
            matches!(&out.commands[1], Command::Status { lat: Some(lat), lon: Some(lon), .. } if [*lat, *lon] == here)
        );

        // A post stays at its post, and says so once a minute.
        let post = Behaviour::for_unit(UnitType::Post, 5.0, 0.0);
        let mut p = Agent::new("quancheng-p1", UnitType::Post, home, post, grid, 3);
        p.start(secs(0.0));
        assert_eq!(p.next_wake(), Some(secs(60.0)));
        assert_eq!(ops(&p.tick(secs(60.0))), ["position"]);
        assert_eq!(p.position(), home);
        assert_eq!(p.next_wake(), Some(secs(120.0)));
    }

    #[test]
    fn on_a_new_connection_only_an_available_unit_reports_again() {
        let mut a = agent(0.0);
        a.start(secs(0.0));
        assert_eq!(ops(&a.hello(secs(1.0))), ["status Available"]);
        a.on_task(secs(2.0), issued("t1", 36.6680, 117.0300));
        assert_eq!(a.hello(secs(3.0)), Output::default());
    }

    #[test]
    fn late_units_sign_after_seventy_seconds() {
        let mut a = agent(1.0);
        a.start(secs(0.0));
        a.on_task(secs(0.0), issued("t1", 36.6612, 117.0171));
        let ack_at = a.next_wake().unwrap().as_secs_f64();
        assert!((70.0..=120.0).contains(&ack_at), "{ack_at}");
        assert_eq!(a.tick(secs(ack_at)).notes, [Note::Acked { late: true }]);
    }

    #[test]
    fn a_cancelled_task_sends_the_unit_back_to_available() {
        let mut a = agent(0.0);
        a.start(secs(0.0));
        a.on_task(secs(0.0), issued("t1", 36.6680, 117.0300));
        let ack_at = a.next_wake().unwrap();
        a.tick(ack_at);
        let mut cancelled = issued("t1", 36.6680, 117.0300);
        cancelled.status = TaskStatus::Cancelled;
        let out = a.on_task(ack_at + secs(5.0), cancelled);
        assert_eq!(ops(&out), ["status Available"]);
        assert_eq!(out.notes, [Note::Cancelled]);
        assert!(a.is_available());
        // It heads home from where it was, still available.
        let wake = a.next_wake().expect("drives home");
        assert!(
            a.tick(wake)
                .commands
                .iter()
                .all(|c| matches!(c, Command::Position { .. }))
        );
        assert!(a.is_available());
        // Cancelling a task we do not hold changes nothing.
        let mut other = issued("t9", 36.0, 117.0);
        other.status = TaskStatus::Cancelled;
        assert!(a.on_task(ack_at + secs(6.0), other).commands.is_empty());
    }

    #[test]
    fn replayed_and_echoed_tasks_are_not_taken_twice() {
        let mut a = agent(0.0);
        a.start(secs(0.0));
        a.on_task(secs(0.0), issued("t1", 36.6680, 117.0300));
        let wake = a.next_wake();
        // The same push again (a replay after reconnect) is ignored.
        assert_eq!(a.on_task(secs(1.0), issued("t1", 36.6680, 117.0300)), Output::default());
        assert_eq!(a.next_wake(), wake);
        let ack_at = wake.unwrap();
        a.tick(ack_at);
        // The echo of our own ack changes nothing.
        let mut echo = issued("t1", 36.6680, 117.0300);
        echo.status = TaskStatus::Acknowledged;
        assert_eq!(a.on_task(ack_at, echo), Output::default());
    }

    #[test]
    fn a_second_task_waits_until_the_first_is_cleared() {
        let mut a = agent(0.0);
        a.start(secs(0.0));
        a.on_task(secs(0.0), issued("t1", 36.6612, 117.0171));
        let out = a.on_task(secs(1.0), issued("t2", 36.6620, 117.0180));
        assert_eq!(out.notes, [Note::TaskReceived]);
        assert_eq!(a.current_task(), Some("t1"));
        let mut now = secs(1.0);
        for _ in 0..10_000 {
            now = a.next_wake().unwrap();
            a.tick(now);
            if a.current_task() == Some("t2") {
                break;
            }
        }
        assert_eq!(a.current_task(), Some("t2"));
        assert!(now > secs(300.0), "t1 was worked to the end first");
    }

    #[test]
    fn a_task_already_signed_for_before_a_restart_is_resumed() {
        let mut a = agent(0.0);
        a.start(secs(0.0));
        let mut t = issued("t1", 36.6680, 117.0300);
        t.status = TaskStatus::Acknowledged;
        let out = a.on_task(secs(5.0), t);
        assert_eq!(ops(&out), ["status EnRoute"]);
        assert_eq!(a.current_task(), Some("t1"));
    }

    #[test]
    fn a_task_without_location_is_worked_where_the_unit_stands() {
        let mut a = agent(0.0);
        a.start(secs(0.0));
        a.on_task(
            secs(0.0),
            TaskUpdate {
                id: "t1".into(),
                status: TaskStatus::Issued,
                location: None,
            },
        );
        let ack_at = a.next_wake().unwrap();
        let out = a.tick(ack_at);
        assert_eq!(ops(&out), ["ack t1", "status EnRoute", "status OnScene"]);
    }
}
