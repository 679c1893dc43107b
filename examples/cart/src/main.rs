//! A shopping cart on calm, as an application writes it, with `calm` as its only calm
//! dependency:
//!
//! - the cart is a lattice derived with `#[derive(Lattice)]`: two replicas edit apart and
//!   merge to the same cart;
//! - the store keeps carts as a kind of their own (`cart`), merged by this type's code:
//!   the embedded store in this process, and nodes started with the kind (`-- node`);
//! - given a cluster file (`calm up` writes `calm-data/cluster.toml`), a client of a
//!   running cluster through `ClusterClient::connect_file`. Nodes of `calm up` know only
//!   calm's own kinds, so the cart goes there as an add-wins set and a counter.
//!
//! Run: `cargo run -p calm-example-cart [-- calm-data/cluster.toml]`, or
//! `cargo run -p calm-example-cart -- node 127.0.0.1:7500 [JOIN-ADDRESS]` for a node of a
//! cluster that stores carts.

use calm::kvs::launch::{NodeLaunch, launch};
use calm::kvs::value::{CustomLattice, Kinds};
use calm::kvs::{ClusterClient, EmbeddedStore, KvsError, NodeConfig, Store};
use calm::lattice::{Lattice, Max, Merge, SetUnionBTreeSet};

/// A cart as a product of lattices: the items ever added, and the largest quantity asked.
#[derive(
    Lattice, Default, Clone, Debug, PartialEq, Eq, calm::serde::Serialize, calm::serde::Deserialize,
)]
#[serde(crate = "calm::serde")]
pub struct Cart {
    /// Items ever added.
    pub items: SetUnionBTreeSet<String>,
    /// The largest quantity asked for.
    pub most: Max<u64>,
}

/// Carts are stored as the kind `cart`.
impl CustomLattice for Cart {
    const KIND: &'static str = "cart";
}

impl Cart {
    /// A cart holding `items`, `most` at most.
    pub fn of(items: &[&str], most: u64) -> Cart {
        Cart {
            items: SetUnionBTreeSet::new_from(items.iter().map(|s| s.to_string())),
            most: Max::new(most),
        }
    }
}

/// The kinds this application's nodes store.
pub fn kinds() -> Result<Kinds, KvsError> {
    Ok(Kinds::new().with::<Cart>()?)
}

/// Two replicas edit a cart apart; merging either way gives the same cart.
pub fn merged_cart() -> Cart {
    let mut phone = Cart::of(&["milk"], 2);
    let laptop = Cart::of(&["eggs", "bread"], 6);
    let mut other_way = laptop.clone();
    other_way.merge(phone.clone());
    phone.merge(laptop);
    assert_eq!(phone, other_way);
    phone
}

/// Saves the edits of two devices as `cart:{user}`, each merged by the store; returns the
/// cart the store holds afterwards.
pub async fn save_cart(
    store: &impl Store,
    user: &str,
    edits: &[Cart],
) -> Result<Option<Cart>, KvsError> {
    let key = format!("cart:{user}");
    for edit in edits {
        store.merge_custom(key.clone(), edit).await?;
    }
    store.get_custom(key).await
}

/// Writes `cart` with calm's own kinds (for nodes without the `cart` kind): the add-wins
/// set `cart:{user}:items` and a quantity counter; returns the items the store holds.
pub async fn save_as_set(
    store: &impl Store,
    user: &str,
    cart: &Cart,
) -> Result<Vec<String>, KvsError> {
    let key = format!("cart:{user}:items");
    store
        .orset_add(key.clone(), cart.items.as_reveal_ref().iter().cloned())
        .await?;
    store.increment(format!("cart:{user}:quantity"), 1).await?;
    let members = store.get(key).await?;
    let members = members
        .as_ref()
        .and_then(|v| v.members())
        .unwrap_or_default();
    Ok(members
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect())
}

/// Runs a node that stores carts until Ctrl-C: `node LISTEN [JOIN]`.
async fn node(listen: &str, join: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let running = launch(NodeLaunch {
        join: join.map(str::parse).transpose()?.into_iter().collect(),
        node: NodeConfig {
            kinds: kinds()?,
            ..NodeConfig::default()
        },
        ..NodeLaunch::new(listen.parse()?, "cart-data".into())
    })?;
    println!("node for carts listening on {}", running.advertised);
    tokio::signal::ctrl_c().await?;
    running.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("node") {
        let listen = args.get(1).map_or("127.0.0.1:7500", String::as_str);
        return node(listen, args.get(2).map(String::as_str)).await;
    }
    let cart = merged_cart();
    println!("merged cart: {cart:?}");
    let store = EmbeddedStore::start(NodeConfig {
        kinds: kinds()?,
        ..NodeConfig::default()
    })?;
    let edits = [Cart::of(&["milk"], 2), Cart::of(&["eggs", "bread"], 6)];
    println!(
        "embedded store holds {:?}",
        save_cart(&store, "ada", &edits).await?
    );
    if let Some(file) = args.first() {
        let client = ClusterClient::connect_file(file).await?;
        println!(
            "cluster holds {:?}",
            save_as_set(&client, "ada", &cart).await?
        );
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use calm::kvs::launch::TestCluster;

    #[tokio::test]
    async fn the_cart_merges_and_is_kept_embedded_and_in_a_cluster() {
        let cart = merged_cart();
        assert_eq!(cart, Cart::of(&["bread", "eggs", "milk"], 6));
        let edits = [Cart::of(&["milk"], 2), Cart::of(&["eggs", "bread"], 6)];

        // The embedded store merges the edits as the cart does.
        let store = EmbeddedStore::start(NodeConfig {
            kinds: kinds().unwrap(),
            ..NodeConfig::default()
        })
        .unwrap();
        assert_eq!(
            save_cart(&store, "ada", &edits).await.unwrap(),
            Some(cart.clone())
        );

        // A cluster of nodes started with the kind, found through its file.
        let cluster = TestCluster::start_with(3, |_| NodeConfig {
            kinds: kinds().unwrap(),
            ..NodeConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile_dir();
        let file = dir.join("cluster.toml");
        cluster.cluster_file().write(&file).unwrap();
        let client = ClusterClient::connect_file(&file).await.unwrap();
        assert_eq!(
            save_cart(&client, "ada", &edits).await.unwrap(),
            Some(cart.clone())
        );
        // With calm's own kinds, as on nodes of `calm up`.
        assert_eq!(
            save_as_set(&client, "bob", &cart).await.unwrap(),
            ["bread", "eggs", "milk"]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("calm-cart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
