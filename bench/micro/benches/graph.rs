//! Start levels of the dependency graph, computed at every change of the
//! service set and at every shutdown: services without dependencies (the
//! common stack), a chain (the deepest graph), and layers of fan-in.

use std::hint::black_box;

use blackhole_core::graph::{Edges, levels};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i:04}")).collect()
}

fn independent(names: &[String]) -> Edges<'_> {
    names.iter().map(|n| (n.as_str(), Vec::new())).collect()
}

/// Each depends on the one before.
fn chain(names: &[String]) -> Edges<'_> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let deps = i.checked_sub(1).map(|p| names[p].as_str()).into_iter();
            (n.as_str(), deps.collect())
        })
        .collect()
}

/// Layers of ten, each service depending on every one of the layer below.
fn layers(names: &[String]) -> Edges<'_> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let below = (i / 10)
                .checked_sub(1)
                .map_or(0..0, |l| l * 10..l * 10 + 10);
            (n.as_str(), below.map(|j| names[j].as_str()).collect())
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("levels");
    for n in [100, 1000] {
        let names = names(n);
        group.throughput(Throughput::Elements(n as u64));
        for (shape, edges) in [
            ("independent", independent(&names)),
            ("chain", chain(&names)),
            ("layers of 10", layers(&names)),
        ] {
            assert_eq!(levels(&edges).iter().map(Vec::len).sum::<usize>(), n);
            group.bench_with_input(BenchmarkId::new(shape, n), &edges, |b, e| {
                b.iter(|| levels(black_box(e)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
