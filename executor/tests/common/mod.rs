//! An in-process cluster with executors on every node, for the executor's tests.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use calm_executor::api::{self, CallRequest, CallResult, DagSpec, ExecRequest, ExecResponse};
use calm_executor::{Consistency, Dag, ExecService, Executor, ExecutorConfig, FnError};
use calm_kvs::ClusterClient;
use calm_kvs::launch::{RunningNode, launch_local_cluster};

pub struct Cluster {
    pub nodes: Vec<RunningNode>,
    pub executors: Vec<Arc<Executor>>,
    pub client: ClusterClient,
    _dir: tempfile::TempDir,
}

pub async fn cluster(n: u8, config: ExecutorConfig) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let nodes = launch_local_cluster(
        n,
        20,
        |_| IpAddr::V4(Ipv4Addr::LOCALHOST),
        None,
        0,
        dir.path(),
    )
    .await
    .expect("cluster starts");
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let mut executors = Vec::new();
    for node in &nodes {
        let client = ClusterClient::connect(vec![node.addr], &node.credentials())
            .await
            .unwrap();
        let executor = Executor::start(node.advertised, client, config)
            .await
            .unwrap();
        node.server
            .services()
            .register(api::SERVICE, Arc::new(ExecService(executor.clone())));
        executors.push(executor);
    }
    let client = ClusterClient::connect(addrs, &nodes[0].credentials())
        .await
        .unwrap();
    Cluster {
        nodes,
        executors,
        client,
        _dir: dir,
    }
}

impl Cluster {
    /// Sends a request to node `i`'s executors over the network, as the CLI does.
    pub async fn request(&self, i: usize, request: ExecRequest) -> Result<ExecResponse, FnError> {
        let client = self.client.node(self.nodes[i].addr).await.unwrap();
        match api::request(&client, &request).await {
            Ok(r) => Ok(r),
            Err(api::ExecError::Fn(e)) => Err(e),
            Err(api::ExecError::Kvs(e)) => panic!("transport failed: {e}"),
        }
    }

    pub async fn register_wat(&self, name: &str, wat: &str) -> Result<(), FnError> {
        self.request(
            0,
            ExecRequest::RegisterFn {
                name: name.into(),
                module: Bytes::copy_from_slice(wat.as_bytes()),
            },
        )
        .await
        .map(|_| ())
    }

    pub async fn register_example(&self, name: &str) {
        let path = format!(
            "{}/../examples/functions/{name}.wat",
            env!("CARGO_MANIFEST_DIR")
        );
        let wat = std::fs::read_to_string(&path).unwrap();
        self.register_wat(name, &wat).await.unwrap();
    }

    pub async fn register_dag(
        &self,
        name: &str,
        edges: &[(&str, &str)],
        lone: &[&str],
    ) -> Result<(), FnError> {
        let edges = edges
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let lone = lone.iter().map(|f| f.to_string()).collect();
        let dag = Dag::new(name, edges, lone)?;
        self.request(0, ExecRequest::RegisterDag(dag))
            .await
            .map(|_| ())
    }

    pub async fn call_on(
        &self,
        i: usize,
        dag: &str,
        args: &[&str],
        consistency: Consistency,
    ) -> Result<CallResult, FnError> {
        let request = CallRequest {
            dag: DagSpec::Named(dag.into()),
            args: args.iter().map(|a| api::Arg::parse(a.as_bytes())).collect(),
            consistency,
            output_key: None,
        };
        match self.request(i, ExecRequest::Call(request)).await? {
            ExecResponse::Call(r) => Ok(r),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    pub async fn call(&self, dag: &str, args: &[&str]) -> Result<CallResult, FnError> {
        self.call_on(0, dag, args, Consistency::Lww).await
    }

    pub async fn call_fn(&self, function: &str, arg: &str) -> Result<CallResult, FnError> {
        let request = CallRequest {
            dag: DagSpec::Inline(Dag::single(function)),
            args: vec![api::Arg::parse(arg.as_bytes())],
            consistency: Consistency::Lww,
            output_key: None,
        };
        match self.request(0, ExecRequest::Call(request)).await? {
            ExecResponse::Call(r) => Ok(r),
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

pub fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}
