//! Test support: a real node listening on a loopback port, with its own CA.

#![allow(dead_code)]

use std::sync::Arc;

use calm_kvs::server::Server;
use calm_kvs::{Client, Node, NodeConfig, tls};

pub struct LocalServer {
    pub server: Option<Server>,
    pub node: Arc<Node>,
    /// A client certificate (user `tester`) and the CA.
    pub creds: tls::Credentials,
    pub dir: tempfile::TempDir,
}

impl LocalServer {
    pub async fn start(config: NodeConfig) -> LocalServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = tls::init_ca(&dir.path().join("ca")).expect("CA");
        let certs = tls::issue(&ca, "node-test", &dir.path().join("nodes")).expect("node cert");
        let client =
            tls::issue_client(&ca, "tester", &dir.path().join("clients")).expect("client cert");
        let node = Arc::new(Node::start(config).expect("node"));
        let server = Server::start(
            node.clone(),
            "127.0.0.1:0".parse().unwrap(),
            tls::server_config(&tls::Credentials {
                ca: ca.cert.clone(),
                cert: certs,
            })
            .expect("server TLS"),
        )
        .expect("listen");
        LocalServer {
            server: Some(server),
            node,
            creds: tls::Credentials {
                ca: ca.cert,
                cert: client,
            },
            dir,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").local_addr()
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr(), &self.creds)
            .await
            .expect("connect")
    }

    /// A QUIC connection that trusts the node, for speaking raw bytes to it.
    pub async fn raw_connection(&self) -> (quinn::Endpoint, quinn::Connection) {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(tls::client_config(&self.creds).unwrap());
        let conn = endpoint
            .connect(self.addr(), tls::SERVER_NAME)
            .unwrap()
            .await
            .expect("handshake");
        (endpoint, conn)
    }
}

pub fn small_config() -> NodeConfig {
    NodeConfig {
        threads: 2,
        ..NodeConfig::default()
    }
}
