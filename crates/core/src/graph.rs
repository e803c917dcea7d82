//! The dependency graph: unknown dependencies and cycles (reported with
//! every member), start levels, and the order to stop in.

use std::collections::{BTreeMap, BTreeSet};

/// `name -> the names it depends on`.
pub type Edges<'a> = BTreeMap<&'a str, Vec<&'a str>>;

/// Finds every cycle; each is reported once, as the path that closes it
/// (`a -> b -> c -> a`), starting from its smallest name.
pub fn cycles(edges: &Edges) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnStack,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        edges: &Edges<'a>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        marks.insert(node, Mark::OnStack);
        stack.push(node);
        for &next in edges.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::Unvisited) {
                Mark::OnStack => {
                    let start = stack.iter().position(|n| *n == next).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    // Rotate so the smallest name leads: one report per cycle.
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| n.as_str())
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(min);
                    cycle.push(cycle[0].clone());
                    found.insert(cycle);
                }
                Mark::Unvisited if edges.contains_key(next) => {
                    visit(next, edges, marks, stack, found)
                }
                _ => {}
            }
        }
        stack.pop();
        marks.insert(node, Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = BTreeSet::new();
    for &node in edges.keys() {
        if marks.get(node).copied().unwrap_or(Mark::Unvisited) == Mark::Unvisited {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found.into_iter().collect()
}

/// Levels for starting: every service in level n depends only on services
/// in levels below n. Services in a cycle or depending on one are left
/// out (they cannot start). Stopping goes through the levels in reverse.
pub fn levels(edges: &Edges) -> Vec<Vec<String>> {
    let mut level_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut remaining: BTreeSet<&str> = edges.keys().copied().collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    loop {
        let ready: Vec<&str> = remaining
            .iter()
            .copied()
            .filter(|n| {
                edges[n]
                    .iter()
                    .all(|d| level_of.contains_key(d) || !edges.contains_key(d))
            })
            .collect();
        if ready.is_empty() {
            return out;
        }
        let level = out.len();
        for n in &ready {
            level_of.insert(n, level);
            remaining.remove(n);
        }
        out.push(ready.iter().map(|s| s.to_string()).collect());
    }
}

/// Everything `name` depends on, directly or not, dependencies first.
pub fn closure<'a>(edges: &Edges<'a>, name: &'a str) -> Vec<&'a str> {
    fn walk<'a>(
        edges: &Edges<'a>,
        n: &'a str,
        seen: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a str>,
    ) {
        for &d in edges.get(n).into_iter().flatten() {
            if seen.insert(d) {
                walk(edges, d, seen, out);
                out.push(d);
            }
        }
    }
    let mut seen = BTreeSet::from([name]);
    let mut out = Vec::new();
    walk(edges, name, &mut seen, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph<'a>(pairs: &[(&'a str, &[&'a str])]) -> Edges<'a> {
        pairs.iter().map(|(n, d)| (*n, d.to_vec())).collect()
    }

    #[test]
    fn reports_whole_cycles_once() {
        let g = graph(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a"]),
            ("d", &["d"]),
            ("e", &["a"]),
        ]);
        assert_eq!(
            cycles(&g),
            [vec!["a", "b", "c", "a"], vec!["d", "d"]]
                .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        );
    }

    #[test]
    fn acyclic_graph_has_no_cycles_and_levels_in_order() {
        let g = graph(&[
            ("api", &["db", "cache"]),
            ("db", &["migrate"]),
            ("migrate", &[]),
            ("cache", &[]),
            ("web", &["api"]),
        ]);
        assert!(cycles(&g).is_empty());
        assert_eq!(
            levels(&g),
            [
                vec!["cache", "migrate"],
                vec!["db"],
                vec!["api"],
                vec!["web"]
            ]
        );
    }

    #[test]
    fn closure_lists_dependencies_first() {
        let g = graph(&[
            ("api", &["db", "cache"]),
            ("db", &["migrate"]),
            ("migrate", &[]),
            ("cache", &[]),
        ]);
        assert_eq!(closure(&g, "api"), ["migrate", "db", "cache"]);
        assert!(closure(&g, "cache").is_empty());
    }

    #[test]
    fn services_in_cycles_get_no_level() {
        let g = graph(&[("a", &["b"]), ("b", &["a"]), ("c", &[])]);
        assert_eq!(levels(&g), [vec!["c"]]);
    }
}
