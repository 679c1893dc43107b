//! DAGs of functions: which function feeds which.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::FnError;

/// A DAG: functions and edges `from -> to` (the output of `from` is an input of `to`).
/// Several sources and sinks are allowed; sources get the call's arguments, a function
/// with several predecessors gets their outputs in the order of its incoming edges, and
/// the call's result is every sink's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dag {
    /// Its name.
    pub name: String,
    /// Every function, in the order given.
    pub functions: Vec<String>,
    /// The edges, in the order given.
    pub edges: Vec<(String, String)>,
}

/// Checks a function or DAG name: 1 to 128 characters of letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), FnError> {
    let bad = |why: &str| {
        Err(FnError::InvalidName {
            name: name.to_string(),
            why: why.to_string(),
        })
    };
    if name.is_empty() || name.len() > 128 {
        return bad("names are 1 to 128 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("use letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

impl Dag {
    /// A DAG from edges and lone functions; functions are listed in order of first
    /// appearance. Checked: see [`validate`](Self::validate).
    pub fn new(
        name: &str,
        edges: Vec<(String, String)>,
        lone: Vec<String>,
    ) -> Result<Dag, FnError> {
        let mut functions: Vec<String> = Vec::new();
        for f in edges.iter().flat_map(|(a, b)| [a, b]).chain(lone.iter()) {
            if !functions.contains(f) {
                functions.push(f.clone());
            }
        }
        let dag = Dag {
            name: name.to_string(),
            functions,
            edges,
        };
        dag.validate()?;
        Ok(dag)
    }

    /// A DAG of one function.
    pub fn single(function: &str) -> Dag {
        Dag {
            name: function.to_string(),
            functions: vec![function.to_string()],
            edges: Vec::new(),
        }
    }

    /// Checks that names are valid, there is a function, every edge joins listed
    /// functions, no edge repeats, and there is no cycle.
    pub fn validate(&self) -> Result<(), FnError> {
        let invalid = |why: String| Err(FnError::InvalidDag(why));
        check_name(&self.name)?;
        if self.functions.is_empty() {
            return invalid(format!("'{}' has no function", self.name));
        }
        let listed: BTreeSet<&String> = self.functions.iter().collect();
        if listed.len() != self.functions.len() {
            return invalid("a function is listed twice".into());
        }
        for f in &self.functions {
            check_name(f)?;
        }
        let mut seen = BTreeSet::new();
        for (a, b) in &self.edges {
            if !listed.contains(a) || !listed.contains(b) {
                return invalid(format!("edge {a}:{b} names a function not in the DAG"));
            }
            if a == b {
                return invalid(format!("edge {a}:{b} is a cycle"));
            }
            if !seen.insert((a, b)) {
                return invalid(format!("edge {a}:{b} is given twice"));
            }
        }
        if self.order().len() != self.functions.len() {
            let stuck: Vec<&String> = self
                .functions
                .iter()
                .filter(|f| !self.order().contains(f))
                .collect();
            return invalid(format!("the edges form a cycle through {stuck:?}"));
        }
        Ok(())
    }

    /// The functions in an order where each comes after its predecessors (Kahn's
    /// algorithm, stable with respect to the listed order). Functions on a cycle are
    /// left out.
    pub fn order(&self) -> Vec<String> {
        let mut indegree: BTreeMap<&str, usize> =
            self.functions.iter().map(|f| (f.as_str(), 0)).collect();
        for (_, b) in &self.edges {
            if let Some(d) = indegree.get_mut(b.as_str()) {
                *d += 1;
            }
        }
        let mut out = Vec::new();
        let mut ready: Vec<&str> = self
            .functions
            .iter()
            .map(String::as_str)
            .filter(|f| indegree[f] == 0)
            .collect();
        while let Some(f) = (!ready.is_empty()).then(|| ready.remove(0)) {
            out.push(f.to_string());
            for (_, b) in self.edges.iter().filter(|(a, _)| a == f) {
                if let Some(d) = indegree.get_mut(b.as_str()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(b.as_str());
                    }
                }
            }
        }
        out
    }

    /// The functions without predecessors.
    pub fn sources(&self) -> Vec<String> {
        self.functions
            .iter()
            .filter(|f| !self.edges.iter().any(|(_, b)| b == *f))
            .cloned()
            .collect()
    }

    /// The functions without successors.
    pub fn sinks(&self) -> Vec<String> {
        self.functions
            .iter()
            .filter(|f| !self.edges.iter().any(|(a, _)| a == *f))
            .cloned()
            .collect()
    }

    /// The predecessors of `f`, in edge order.
    pub fn predecessors(&self, f: &str) -> Vec<String> {
        self.edges
            .iter()
            .filter(|(_, b)| b == f)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The successors of `f`, in edge order.
    pub fn successors(&self, f: &str) -> Vec<String> {
        self.edges
            .iter()
            .filter(|(a, _)| a == f)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn a_chain_orders_and_has_one_source_and_sink() {
        let d = Dag::new("c", vec![e("inc", "sq")], vec![]).unwrap();
        assert_eq!(d.order(), vec!["inc", "sq"]);
        assert_eq!(d.sources(), vec!["inc"]);
        assert_eq!(d.sinks(), vec!["sq"]);
    }

    #[test]
    fn a_diamond_keeps_edge_order_for_the_join() {
        let d = Dag::new(
            "d",
            vec![e("a", "b"), e("a", "c"), e("c", "j"), e("b", "j")],
            vec!["lone".into()],
        )
        .unwrap();
        assert_eq!(d.predecessors("j"), vec!["c", "b"]);
        assert_eq!(d.sources(), vec!["a", "lone"]);
        assert_eq!(d.sinks(), vec!["j", "lone"]);
        let order = d.order();
        let at = |f: &str| order.iter().position(|x| x == f).unwrap();
        assert!(at("a") < at("b") && at("b") < at("j") && at("c") < at("j"));
    }

    #[test]
    fn cycles_and_bad_edges_are_refused_with_the_reason() {
        let cycle = Dag::new("x", vec![e("a", "b"), e("b", "c"), e("c", "a")], vec![]);
        assert!(matches!(cycle, Err(FnError::InvalidDag(m)) if m.contains("cycle")));
        let selfloop = Dag::new("x", vec![e("a", "a")], vec![]);
        assert!(matches!(selfloop, Err(FnError::InvalidDag(m)) if m.contains("cycle")));
        let twice = Dag::new("x", vec![e("a", "b"), e("a", "b")], vec![]);
        assert!(matches!(twice, Err(FnError::InvalidDag(m)) if m.contains("twice")));
        let empty = Dag::new("x", vec![], vec![]);
        assert!(matches!(empty, Err(FnError::InvalidDag(m)) if m.contains("no function")));
        let bad_name = Dag::new("x y", vec![], vec!["a".into()]);
        assert!(matches!(bad_name, Err(FnError::InvalidName { .. })));
    }
}
