//! Where each function of a call runs: the scheduler's choice over this node and the
//! others it knows, from their indexes and loads.

use super::*;

impl Executor {
    /// Picks a node for every function, in the DAG's order.
    pub(super) fn place(&self, dag: &Dag, args: &[Arg]) -> Vec<Placement> {
        let mut nodes = vec![self.self_load()];
        nodes.extend(
            self.others
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        let refs: Vec<Bytes> = args
            .iter()
            .filter_map(|a| match a {
                Arg::Ref(k) => Some(k.clone()),
                Arg::Bytes(_) => None,
            })
            .collect();
        let mut out: Vec<Placement> = Vec::new();
        let mut rng = lock(&self.rng);
        for f in dag.order() {
            let preds = dag.predecessors(&f);
            let pred_node = preds
                .first()
                .and_then(|p| out.iter().find(|x| &x.function == p))
                .map(|x| x.node.clone());
            let my_refs: &[Bytes] = if preds.is_empty() { &refs } else { &[] };
            let roll: f64 = rng.random();
            let pick: usize = rng.random_range(0..1 << 16);
            let (i, reason) = place(
                &self.config.scheduler,
                &nodes,
                my_refs,
                pred_node.as_deref(),
                roll,
                pick,
            );
            // Count the placement as load, so the next functions spread.
            nodes[i].queued += 1;
            tracing::debug!(function = %f, node = %nodes[i].addr, %reason, "placed");
            out.push(Placement {
                function: f,
                node: nodes[i].addr.clone(),
                reason: reason.to_string(),
            });
        }
        drop(rng);
        let mut recent = lock(&self.recent);
        for p in &out {
            recent.push_back(p.clone());
            if recent.len() > 16 {
                recent.pop_front();
            }
        }
        out
    }

    pub(super) fn self_load(&self) -> NodeLoad {
        let index = self.index();
        NodeLoad {
            addr: self.me.clone(),
            executors: index.executors,
            queued: index.queued,
            held: index.held.into_iter().collect(),
        }
    }
}
