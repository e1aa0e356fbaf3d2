//! The transaction dependency graph: nodes are transactions (history indices), edges are
//! typed dependencies. Cycles are found in two steps, each linear in the graph's size:
//! Tarjan's strongly connected components, then, inside one component, a breadth-first
//! search that closes a cycle through a chosen edge with the fewest other edges.

use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Write-write: the source's append precedes the target's in the version order.
    Ww,
    /// Write-read: the target read the source's append.
    Wr,
    /// Read-write (anti-dependency): the source read a version the target's append follows.
    Rw,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Ww => "ww",
            Kind::Wr => "wr",
            Kind::Rw => "rw",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Edge {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) kind: Kind,
    /// Why the edge exists, for the report.
    pub(crate) why: String,
}

#[derive(Default)]
pub(crate) struct Graph {
    pub(crate) edges: Vec<Edge>,
    out: HashMap<usize, Vec<usize>>,
    seen: HashSet<(usize, usize, Kind)>,
}

impl Graph {
    /// Adds an edge unless it is a self-loop or a duplicate of one already present.
    pub(crate) fn add(&mut self, from: usize, to: usize, kind: Kind, why: impl FnOnce() -> String) {
        if from == to || !self.seen.insert((from, to, kind)) {
            return;
        }
        self.out.entry(from).or_default().push(self.edges.len());
        self.edges.push(Edge {
            from,
            to,
            kind,
            why: why(),
        });
    }

    fn successors<'a>(
        &'a self,
        node: usize,
        kinds: &'a [Kind],
    ) -> impl Iterator<Item = usize> + 'a {
        self.out
            .get(&node)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&e| kinds.contains(&self.edges[e].kind))
    }

    fn nodes(&self) -> Vec<usize> {
        let mut nodes: Vec<usize> = self.edges.iter().flat_map(|e| [e.from, e.to]).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Strongly connected components with more than one node, using only `kinds` edges.
    pub(crate) fn components(&self, kinds: &[Kind]) -> Vec<Vec<usize>> {
        let mut t = Tarjan {
            graph: self,
            kinds,
            index: HashMap::new(),
            low: HashMap::new(),
            on_stack: HashSet::new(),
            stack: Vec::new(),
            calls: Vec::new(),
            out: Vec::new(),
        };
        for root in self.nodes() {
            if !t.index.contains_key(&root) {
                t.run(root);
            }
        }
        t.out
    }

    /// A cycle inside `component` through the first edge of kind `through`, closed by the
    /// shortest path of `kinds` edges: the edge indices in cycle order.
    pub(crate) fn cycle_through(
        &self,
        component: &[usize],
        through: Kind,
        kinds: &[Kind],
    ) -> Option<Vec<usize>> {
        let members: HashSet<usize> = component.iter().copied().collect();
        let first = component.iter().find_map(|&n| {
            self.successors(n, kinds)
                .find(|&e| self.edges[e].kind == through && members.contains(&self.edges[e].to))
        })?;
        let (start, goal) = (self.edges[first].to, self.edges[first].from);
        let mut came_by: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut visited = HashSet::from([start]);
        while let Some(n) = queue.pop_front() {
            if n == goal {
                let mut path = Vec::new();
                let mut at = goal;
                while at != start {
                    let e = came_by[&at];
                    path.push(e);
                    at = self.edges[e].from;
                }
                path.push(first);
                path.reverse();
                return Some(path);
            }
            for e in self.successors(n, kinds) {
                let w = self.edges[e].to;
                if members.contains(&w) && visited.insert(w) {
                    came_by.insert(w, e);
                    queue.push_back(w);
                }
            }
        }
        None
    }
}

/// Iterative Tarjan (no recursion, so a long chain of dependencies cannot overflow the stack).
struct Tarjan<'g> {
    graph: &'g Graph,
    kinds: &'g [Kind],
    index: HashMap<usize, usize>,
    low: HashMap<usize, usize>,
    on_stack: HashSet<usize>,
    stack: Vec<usize>,
    /// The DFS path: each node with its successor edges not yet explored.
    calls: Vec<(usize, Vec<usize>)>,
    out: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        let n = self.index.len();
        self.index.insert(v, n);
        self.low.insert(v, n);
        self.stack.push(v);
        self.on_stack.insert(v);
        self.calls
            .push((v, self.graph.successors(v, self.kinds).collect()));
    }

    fn lower(&mut self, v: usize, to: usize) {
        let low = self.low.get_mut(&v).expect("visited");
        *low = (*low).min(to);
    }

    fn run(&mut self, root: usize) {
        self.visit(root);
        while let Some((v, pending)) = self.calls.last_mut() {
            let v = *v;
            if let Some(e) = pending.pop() {
                let w = self.graph.edges[e].to;
                match self.index.get(&w) {
                    None => self.visit(w),
                    Some(&w_index) if self.on_stack.contains(&w) => self.lower(v, w_index),
                    Some(_) => {}
                }
                continue;
            }
            self.calls.pop();
            let v_low = self.low[&v];
            if let Some(&(parent, _)) = self.calls.last() {
                self.lower(parent, v_low);
            }
            if v_low == self.index[&v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort_unstable();
                    self.out.push(component);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_a_cycle_through_the_requested_kind() {
        let mut g = Graph::default();
        g.add(1, 2, Kind::Ww, String::new);
        g.add(2, 3, Kind::Wr, String::new);
        g.add(3, 1, Kind::Rw, String::new);
        g.add(3, 4, Kind::Ww, String::new);
        g.add(1, 1, Kind::Ww, String::new); // self-loops are dropped
        g.add(1, 2, Kind::Ww, String::new); // and duplicates
        assert_eq!(g.edges.len(), 4);
        assert_eq!(
            g.components(&[Kind::Ww, Kind::Wr, Kind::Rw]),
            vec![vec![1, 2, 3]]
        );
        assert!(g.components(&[Kind::Ww, Kind::Wr]).is_empty());
        let cycle = g
            .cycle_through(&[1, 2, 3], Kind::Rw, &[Kind::Ww, Kind::Wr, Kind::Rw])
            .unwrap();
        let kinds: Vec<Kind> = cycle.iter().map(|&e| g.edges[e].kind).collect();
        assert_eq!(kinds, vec![Kind::Rw, Kind::Ww, Kind::Wr]);
        for pair in cycle.windows(2) {
            assert_eq!(g.edges[pair[0]].to, g.edges[pair[1]].from);
        }
        assert_eq!(g.edges[*cycle.last().unwrap()].to, g.edges[cycle[0]].from);
    }
}
