//! Starting a complete node — certificates, workers, listener, cluster agent — in one call.
//! `calm server` and the benchmarks use it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cluster::ClusterConfig;
use crate::cluster_runtime::{Cluster, Peers};
use crate::error::KvsError;
use crate::node::{Node, NodeConfig};
#[cfg(feature = "resp")]
use crate::resp::{RespConfig, RespServer};
use crate::server::Server;
use crate::tls::{self, CaFiles, CertFiles, Credentials};

/// What to start.
#[derive(Clone, Debug)]
pub struct NodeLaunch {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// The address others reach this node at, if not the listen address.
    pub advertise: Option<SocketAddr>,
    /// Nodes of the cluster to join (none: a new cluster).
    pub join: Vec<SocketAddr>,
    /// Worker settings.
    pub node: NodeConfig,
    /// Cluster settings.
    pub cluster: ClusterConfig,
    /// Folder holding the cluster CA (`ca/`, created if absent) and node certificates
    /// (`nodes/`).
    pub data_dir: PathBuf,
    /// A node certificate issued beforehand, with the certificate of the CA that issued it
    /// (the CA's key is then not needed: with cert-manager, say). Default: issued from the
    /// data dir's CA, created if absent.
    pub cert: Option<Credentials>,
    /// Where to listen for Redis clients (RESP over TCP), if at all (feature `resp`).
    #[cfg(feature = "resp")]
    pub resp: Option<SocketAddr>,
    /// The RESP front-end's settings (password).
    #[cfg(feature = "resp")]
    pub resp_config: RespConfig,
}

impl NodeLaunch {
    /// A node listening on `listen` that starts a new cluster, its CA and certificates in
    /// `data_dir`, with the default settings: set `join`, `node` (its
    /// [kinds](NodeConfig::kinds), say) and the rest as needed. A node binary of an
    /// application that stores its own lattices:
    ///
    /// ```no_run
    /// use calm_kvs::launch::{NodeLaunch, launch};
    /// use calm_kvs::value::Kinds;
    /// use calm_kvs::NodeConfig;
    /// # #[derive(calm_lattice::Lattice, Default, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    /// # struct Cart { most: calm_lattice::Max<u64> }
    /// # impl calm_kvs::value::CustomLattice for Cart { const KIND: &'static str = "cart"; }
    ///
    /// # async fn run() -> Result<(), calm_kvs::KvsError> {
    /// let running = launch(NodeLaunch {
    ///     join: vec!["127.0.0.1:7400".parse().unwrap()],
    ///     node: NodeConfig {
    ///         kinds: Kinds::new().with::<Cart>()?,
    ///         ..NodeConfig::default()
    ///     },
    ///     ..NodeLaunch::new("127.0.0.1:7401".parse().unwrap(), "calm-data".into())
    /// })?;
    /// // ... until it should stop:
    /// running.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> NodeLaunch {
        NodeLaunch {
            listen,
            advertise: None,
            join: Vec::new(),
            node: NodeConfig::default(),
            cluster: ClusterConfig::default(),
            data_dir,
            cert: None,
            #[cfg(feature = "resp")]
            resp: None,
            #[cfg(feature = "resp")]
            resp_config: RespConfig::default(),
        }
    }
}

/// Where the node known as `addr` keeps its keys under a data dir: `DIR/store/node-IP-PORT`
/// (several local nodes can share one data dir).
pub fn store_dir(data_dir: &std::path::Path, addr: SocketAddr) -> PathBuf {
    data_dir
        .join("store")
        .join(format!("node-{}-{}", addr.ip(), addr.port()).replace(':', "_"))
}

/// A node that is up.
pub struct RunningNode {
    /// Its workers.
    pub node: Arc<Node>,
    /// Its cluster agent.
    pub cluster: Cluster,
    /// Its listener.
    pub server: Server,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address it is known by in the cluster.
    pub advertised: SocketAddr,
    /// The cluster CA (its key is absent when the node was given its certificate).
    pub ca: CaFiles,
    /// The node's own certificate and key.
    pub cert: CertFiles,
    /// The RESP listener, when asked for (feature `resp`).
    #[cfg(feature = "resp")]
    pub resp: Option<RespServer>,
}

/// Starts a node. The CA is created in the data dir if absent; the node's certificate is
/// issued from it unless one is given. The node's replica ids are derived from the address
/// it is known by, so they differ across the cluster.
pub fn launch(l: NodeLaunch) -> Result<RunningNode, KvsError> {
    if l.listen.ip().is_unspecified() && l.advertise.is_none() {
        return Err(KvsError::Config(format!(
            "--listen {} names no single address; other nodes and clients reach a node by its address, so give a concrete one such as 127.0.0.1:{}, or name it with --advertise",
            l.listen,
            l.listen.port()
        )));
    }
    std::fs::create_dir_all(&l.data_dir).map_err(|e| KvsError::io(&l.data_dir, e))?;
    let ca_dir = l.data_dir.join("ca");
    let (ca, certs) = match l.cert {
        Some(given) => (
            CaFiles {
                cert: given.ca,
                key: CaFiles::in_dir(&ca_dir).key,
            },
            given.cert,
        ),
        None => {
            let ca_existed = CaFiles::in_dir(&ca_dir).exist();
            let ca = tls::ensure_ca(&ca_dir)?;
            if !ca_existed {
                tracing::info!("created a cluster CA in {}", ca_dir.display());
            }
            let name = format!("node-{}-{}", l.listen.ip(), l.listen.port()).replace(':', "_");
            let files = CertFiles::in_dir(&l.data_dir.join("nodes"), &name);
            let files = if files.exist() {
                files
            } else {
                tls::issue(&ca, &name, &l.data_dir.join("nodes"))?
            };
            (ca, files)
        }
    };
    let creds = Credentials {
        ca: ca.cert.clone(),
        cert: certs,
    };
    let tls_config = tls::server_config(&creds)?;
    let bound = Server::bind(l.listen, tls_config)?;
    let addr = bound.local_addr();
    let advertised = l.advertise.unwrap_or(addr);
    // Replica ids must differ between nodes: derive them from the node's identity.
    let mut node_config = l.node;
    node_config.node_id = crate::ring::key_hash(advertised.to_string().as_bytes()) as u32;
    let node = Arc::new(Node::start(node_config)?);
    // Peers see this node's traffic come from its own address.
    let peers = Arc::new(Peers::new(
        tls::client_config(&creds)?,
        (!addr.ip().is_unspecified()).then(|| addr.ip()),
    ));
    let cluster = Cluster::start(
        advertised.to_string(),
        l.join.iter().map(|a| a.to_string()).collect(),
        l.cluster,
        node.pool(),
        peers,
        tokio::runtime::Handle::current(),
    )?;
    let server = bound.serve(node.clone(), Some(cluster.clone()));
    #[cfg(feature = "resp")]
    let resp = {
        let mut resp_config = l.resp_config;
        if let crate::resp::RespTls::NodeCertificate = resp_config.tls {
            resp_config.tls = crate::resp::RespTls::Config(tls::resp_server_config(&creds)?);
        }
        match l.resp {
            Some(addr) => Some(RespServer::start(
                addr,
                node.clone(),
                Some(cluster.clone()),
                resp_config,
                server.services().clone(),
            )?),
            None => None,
        }
    };
    Ok(RunningNode {
        node,
        cluster,
        server,
        addr,
        advertised,
        ca,
        cert: creds.cert,
        #[cfg(feature = "resp")]
        resp,
    })
}

impl RunningNode {
    /// The node's own credentials (its node certificate), to connect to the cluster as
    /// the node would: every request is allowed.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            ca: self.ca.cert.clone(),
            cert: self.cert.clone(),
        }
    }

    /// Leaves the cluster and stops.
    pub async fn stop(self) {
        #[cfg(feature = "resp")]
        if let Some(resp) = self.resp {
            resp.shutdown();
        }
        self.cluster.leave().await;
        self.cluster.stop();
        self.server.shutdown().await;
        self.node.shutdown();
    }

    /// Stops at once, without leaving the cluster (as if the process ended).
    pub fn abort(self) {
        #[cfg(feature = "resp")]
        if let Some(resp) = self.resp {
            resp.shutdown();
        }
        self.cluster.stop();
        self.server.close();
        self.node.shutdown();
    }
}

/// A cluster for an application's own tests: `n` nodes in this process on 127.0.0.1, on
/// ports the system picks, in memory, their certificates in a temporary folder. Dropping
/// it stops every node and removes the folder; [`stop`](TestCluster::stop) also has the
/// nodes leave one by one first.
///
/// ```
/// use calm_kvs::launch::TestCluster;
/// use calm_kvs::{ReadValue, Store};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cluster = TestCluster::start(3).await.unwrap();
/// let client = cluster.client().await.unwrap();
/// client.increment("visits", 2).await.unwrap();
/// assert_eq!(client.get("visits").await.unwrap(), Some(ReadValue::Counter { value: 2 }));
/// drop(cluster); // every node stops
/// # });
/// ```
pub struct TestCluster {
    nodes: Vec<RunningNode>,
    dir: PathBuf,
    client: Credentials,
}

impl TestCluster {
    /// Starts `n` nodes (at least one) and returns once every one sees every one alive.
    pub async fn start(n: u8) -> Result<TestCluster, KvsError> {
        TestCluster::start_with(n, |_| NodeConfig::default()).await
    }

    /// Like [`start`](Self::start), node `i` with `config(i)`'s storage settings and
    /// [kinds](NodeConfig::kinds) (each runs one worker thread, in memory).
    ///
    /// ```
    /// use calm_kvs::launch::TestCluster;
    /// use calm_kvs::value::{CustomLattice, Kinds};
    /// use calm_kvs::{NodeConfig, Store};
    /// use calm_lattice::{Lattice, Max};
    ///
    /// #[derive(Lattice, Default, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    /// struct Highest {
    ///     score: Max<u64>,
    /// }
    /// impl CustomLattice for Highest {
    ///     const KIND: &'static str = "highest";
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let kinds = Kinds::new().with::<Highest>().unwrap();
    /// let cluster = TestCluster::start_with(3, |_| NodeConfig {
    ///     kinds: kinds.clone(),
    ///     ..NodeConfig::default()
    /// })
    /// .await
    /// .unwrap();
    /// let client = cluster.client().await.unwrap();
    /// client.merge_custom("top", &Highest { score: Max::new(7) }).await.unwrap();
    /// client.merge_custom("top", &Highest { score: Max::new(3) }).await.unwrap();
    /// let top: Option<Highest> = client.get_custom("top").await.unwrap();
    /// assert_eq!(top, Some(Highest { score: Max::new(7) }));
    /// # });
    /// ```
    pub async fn start_with(
        n: u8,
        config: impl Fn(u8) -> NodeConfig,
    ) -> Result<TestCluster, KvsError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "calm-test-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| KvsError::io("the test cluster's folder", e))?;
        let localhost = |_| std::net::IpAddr::from([127, 0, 0, 1]);
        let started = async {
            let nodes = launch_nodes(n.max(1), 20, localhost, None, 0, &dir, &config).await?;
            let cert = tls::issue_client(&nodes[0].ca, "test", &dir.join("clients"))?;
            let client = Credentials {
                ca: nodes[0].ca.cert.clone(),
                cert,
            };
            Ok::<_, KvsError>((nodes, client))
        };
        match started.await {
            Ok((nodes, client)) => Ok(TestCluster { nodes, dir, client }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// The nodes' addresses (for [`ClusterClient::connect`](crate::ClusterClient::connect)
    /// or [`Client::connect`](crate::Client::connect)).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.advertised).collect()
    }

    /// A client certificate (user `test`) and the CA, for clients of this cluster.
    pub fn credentials(&self) -> &Credentials {
        &self.client
    }

    /// A cluster file describing this cluster (its nodes, its CA and the `test` user's
    /// certificate), for code that finds a cluster from a file.
    pub fn cluster_file(&self) -> crate::cluster_file::ClusterFile {
        crate::cluster_file::ClusterFile {
            nodes: self.addrs(),
            ca: self.client.ca.clone(),
            cert: Some(self.client.cert.cert.clone()),
            key: Some(self.client.cert.key.clone()),
            path: None,
        }
    }

    /// A client that sends each operation to its key's owners.
    pub async fn client(&self) -> Result<crate::ClusterClient, KvsError> {
        crate::ClusterClient::connect(self.addrs(), &self.client).await
    }

    /// The running nodes (to stop one, read one's stats, ...).
    pub fn nodes(&self) -> &[RunningNode] {
        &self.nodes
    }

    /// Stops node `i` at once, as if its process ended; the others declare it dead.
    pub fn kill(&mut self, i: usize) {
        if i < self.nodes.len() {
            self.nodes.remove(i).abort();
        }
    }

    /// Has every node leave the cluster and stop, one by one.
    pub async fn stop(mut self) {
        for node in std::mem::take(&mut self.nodes) {
            node.stop().await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.drain(..) {
            node.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `n` nodes in this process, node `i` listening on `ip_of(i)` at `port` (known as
/// `advertise_of(i)` if given, e.g. behind a fault proxy), each with one storage worker, in
/// memory, with gossip every `gossip_ms`; the first starts the cluster and the others join
/// it. Returns once every node sees every node alive (or fails after 30 s). For
/// benchmarks, experiments and [`TestCluster`].
pub async fn launch_local_cluster(
    n: u8,
    gossip_ms: u64,
    ip_of: impl Fn(u8) -> std::net::IpAddr,
    advertise_of: Option<&dyn Fn(u8) -> SocketAddr>,
    port: u16,
    dir: &std::path::Path,
) -> Result<Vec<RunningNode>, KvsError> {
    launch_nodes(n, gossip_ms, ip_of, advertise_of, port, dir, &|_| {
        NodeConfig::default()
    })
    .await
}

/// [`launch_local_cluster`] with node `i`'s settings from `config(i)` (its thread count
/// is set to one).
async fn launch_nodes(
    n: u8,
    gossip_ms: u64,
    ip_of: impl Fn(u8) -> std::net::IpAddr,
    advertise_of: Option<&dyn Fn(u8) -> SocketAddr>,
    port: u16,
    dir: &std::path::Path,
    config: &dyn Fn(u8) -> NodeConfig,
) -> Result<Vec<RunningNode>, KvsError> {
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..n {
        let first = nodes.first().map(|f: &RunningNode| f.advertised);
        nodes.push(launch(NodeLaunch {
            listen: SocketAddr::new(ip_of(i), port),
            advertise: advertise_of.map(|a| a(i)),
            join: first.into_iter().collect(),
            node: NodeConfig {
                threads: 1,
                ..config(i)
            },
            cluster: ClusterConfig {
                gossip_period_ms: gossip_ms,
                ..ClusterConfig::default()
            },
            data_dir: dir.to_path_buf(),
            cert: None,
            #[cfg(feature = "resp")]
            resp: None,
            #[cfg(feature = "resp")]
            resp_config: RespConfig::default(),
        })?);
    }
    // Every node must see every node alive: until then a node may not know all of a key's
    // owners.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let fewest = nodes
            .iter()
            .map(|node| {
                node.cluster
                    .view()
                    .members
                    .iter()
                    .filter(|m| m.status == crate::cluster::Status::Alive)
                    .count()
            })
            .min()
            .unwrap_or(0);
        if fewest == usize::from(n) {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(KvsError::Config(format!(
                "the nodes did not all see each other within 30 s (one sees {fewest} of {n})"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(nodes)
}

/// Starts a node process (`calm server …`, built by the caller) with its standard output
/// piped, and waits for the `ready:` line it prints once it listens; the rest of its output
/// is drained in the background so it never blocks on a full pipe. A process that ends or
/// prints anything else first is killed, and the error says so.
pub fn spawn_ready(cmd: &mut std::process::Command) -> Result<std::process::Child, String> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err("the node's output could not be read".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("ready:") => {
            std::thread::spawn(move || for _ in lines {});
            Ok(child)
        }
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(match other {
                Some(Ok(line)) => format!("the node printed {line:?} instead of ready"),
                _ => "the node ended before it was ready".into(),
            })
        }
    }
}
