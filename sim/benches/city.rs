//! How fast the simulated city is made: reports generated per second (so a
//! load test can use the generator without it being the bottleneck), a
//! unit's state machine, and the offline baseline over a simulated day.

use std::sync::Arc;
use std::time::Duration;

use bus::Config;
use bus::model::{TaskStatus, UnitType};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sim::agent::{Agent, Behaviour, TaskLocation, TaskUpdate};
use sim::city::Grid;
use sim::generate::Generator;

fn generate(c: &mut Criterion) {
    let mut config = Config::defaults();
    config.sim.calls_per_hour = 240.0;
    let mut group = c.benchmark_group("generate");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000 reports", |b| {
        let mut generator = Generator::new(&config, 1, "bench", 20.0);
        b.iter(|| {
            for _ in 0..1000 {
                std::hint::black_box(generator.next());
            }
        })
    });
    group.finish();
}

fn agent(c: &mut Criterion) {
    let grid = Arc::new(Grid::new(&Config::defaults()));
    c.bench_function("agent: one task from push to available", |b| {
        b.iter(|| {
            let behaviour = Behaviour::for_unit(UnitType::PatrolCar, 30.0, 0.1);
            let mut a = Agent::new(
                "u",
                UnitType::PatrolCar,
                [36.6611, 117.0170],
                behaviour,
                grid.clone(),
                1,
            );
            a.start(Duration::ZERO);
            a.on_task(
                Duration::ZERO,
                TaskUpdate {
                    id: "t".into(),
                    status: TaskStatus::Issued,
                    location: Some(TaskLocation {
                        lat: 36.6680,
                        lon: 117.0300,
                    }),
                },
            );
            while a.current_task().is_some() {
                let Some(at) = a.next_wake() else { break };
                std::hint::black_box(a.tick(at));
            }
        })
    });
}

fn baseline(c: &mut Criterion) {
    let config = Config::defaults();
    c.bench_function("baseline: one simulated day", |b| {
        b.iter(|| std::hint::black_box(sim::baseline::baseline(&config, 1, 0.0, Duration::from_secs(86400))))
    });
}

criterion_group!(benches, generate, agent, baseline);
criterion_main!(benches);
